"""The benchmark harness's own logic: repeated runs combined, and what a measured process imported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.common import combine, ratio, reference
from benchmarks.installs import probe_import

ROOT = Path(__file__).resolve().parent.parent


def test_repeated_runs_report_the_median_judged_again_with_lowest_and_highest() -> None:
    runs = [[ratio("warm / original", value, 0.35), reference("pass", [value / 10])] for value in (0.30, 0.50, 0.40)]
    warm, pass_ = combine(runs)
    assert warm.value == 0.40
    assert warm.ok is False  # two of three runs passed, the median misses
    assert "median of 3 runs, 0.30×–0.50×" in warm.note
    assert warm.target == "≤ 0.35×"
    assert pass_.value == 0.04 and pass_.ok is None


def test_a_floor_target_is_judged_as_a_floor_after_combining() -> None:
    rows = combine([[ratio("tunnel / ssh -L", value, 0.9, at_least=True)] for value in (0.85, 0.95, 0.92)])
    assert rows[0].value == 0.92 and rows[0].ok is True


def test_python_m_from_the_repository_root_imports_the_source_tree() -> None:
    """Why the benchmark runs its processes elsewhere: `-m` puts the working directory first on sys.path,
    and `python -v` of the measured command line says where the package's code came from."""
    argv = [sys.executable, "-m", "remote_http_launcher", "--help"]
    found = probe_import(argv, {"PATH": "/usr/bin:/bin"}, str(ROOT))
    assert found["exit"] == 0
    assert found["code_from"].startswith(str(ROOT / "remote_http_launcher") + "/"), found


def test_the_fault_matrix_runs_its_scenarios_in_order_and_the_cluster_one_only_when_asked() -> None:
    from benchmarks.faults import OPTIONAL, SCENARIOS, parse

    assert parse([]).only == list(SCENARIOS)
    assert "requeue" in OPTIONAL and "requeue" not in SCENARIOS
    assert parse(["--only", "requeue, soak"]).only == ["soak", "requeue"]
    with pytest.raises(SystemExit):
        parse(["--only", "soak,nonsense"])
