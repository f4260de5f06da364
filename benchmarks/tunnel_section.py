"""Tunnel throughput and latency: benchmarks/tunnel_throughput.py, ours against `ssh -L` on one link.

It is run as its own process (it sets up what it needs) with `--json`, our
side by the installed package (`--python`), in A/B pairs of bulk downloads of
the same size; the target row is the median of the per-pair ratios. JSON is expected as a list of rows or
{"rows": [...]}, each with metric/value and optionally unit, target, pass,
note. Without JSON, the Markdown table rows it prints are taken verbatim.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from typing import Any

from .common import PYTHON, ROOT, Row, log, ours_python, ratio, spread

SCRIPT = ROOT / "benchmarks" / "tunnel_throughput.py"
TIMEOUT = 1800


def run_tunnel(rounds: int) -> list[Row]:
    """`rounds` A/B pairs of bulk downloads (at least 2)."""
    label = "tunnel throughput/latency (benchmarks/tunnel_throughput.py)"
    if not SCRIPT.exists():
        return [Row(label, "not present yet", "")]
    log(f"running {SCRIPT.relative_to(ROOT)} --json")
    try:
        proc = subprocess.run([PYTHON, str(SCRIPT), "--json", "--python", ours_python(),
                               "--rounds", str(max(2, rounds))], cwd=ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return [Row(label, f"timed out after {TIMEOUT} s", "", "", False)]
    if proc.returncode != 0 and not proc.stdout.strip():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return [Row(label, f"failed (exit {proc.returncode}): {tail}", "", "", False)]
    try:
        data = json.loads(proc.stdout)
        if isinstance(data, dict) and isinstance(data.get("results"), dict):
            return _comparison_rows(data)
        return [_row(item) for item in _items(data)]
    except (ValueError, KeyError, TypeError):
        return _markdown_rows(proc.stdout) or [Row(label, "unreadable output", "", "", False)]


def _comparison_rows(data: dict[str, Any]) -> list[Row]:
    """{"results": {"ours": {...}, "ssh -L": {...}}, "bulk_bytes", "requests", "link"} (ours vs OpenSSH)."""
    from . import tunnel_throughput as theirs

    ours, openssh = data["results"]["ours"], data["results"].get("ssh -L")
    size = f"{data.get('bulk_bytes', 0) / 2**20:.0f} MiB"
    link = str(data.get("link", ""))
    if openssh is None:
        return [Row(f"tunnel bulk download {size} (best)", f"{ours['bulk_mb_s']:.1f} MB/s", "", "", None,
                    "ssh -L skipped: no ssh client"),
                Row(f"tunnel small GET, median of {data.get('requests')}", ours["latency_ms"], "ms", "", None, link)]
    pairs = ours["pair_ratios"]
    extra = ours["latency_ms"] - openssh["latency_ms"]
    limit_ms = theirs.MAX_EXTRA_LATENCY * 1e3
    return [
        ratio(f"tunnel bulk download {size}, ours / ssh -L, median of {len(pairs)} A/B pairs",
              statistics.median(pairs), theirs.MIN_RATIO,
              f"pairs {spread(pairs)}; medians {ours['bulk_median_mb_s']:.0f} vs {openssh['bulk_median_mb_s']:.0f} "
              f"MB/s; {link}", at_least=True, samples=pairs, of="`ssh -L`"),
        Row(f"tunnel bulk download {size}, best of ours / best of ssh -L (reference)", ours["best_ratio"], "×",
            note=f"{ours['bulk_mb_s']:.0f} vs {openssh['bulk_mb_s']:.0f} MB/s"),
        Row(f"tunnel small GET on a new connection, median of {data.get('requests')}: ours − ssh -L",
            extra, "ms", f"≤ +{limit_ms:g} ms", extra <= limit_ms,
            f"{ours['latency_ms']:.2f} vs {openssh['latency_ms']:.2f} ms", limit=limit_ms),
        Row("tunnel small GET p95: ours / ssh -L",
            f"{ours['latency_p95_ms']:.2f} / {openssh['latency_p95_ms']:.2f} ms", ""),
    ]


def _items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        data = data.get("rows", data.get("results", []))
    if not isinstance(data, list):
        raise ValueError("no rows")
    return data


def _row(item: dict[str, Any]) -> Row:
    ok = item.get("pass", item.get("ok"))
    value = item.get("value")
    target = item.get("target", "")
    unit = str(item.get("unit", ""))
    if isinstance(value, (int, float)) and unit not in ("s", "ms", "µs", ""):
        value = f"{value:g} {unit}"
    return Row(f"tunnel: {item['metric']}", value, unit if not isinstance(value, str) else "",
               str(target) if target is not None else "", ok if isinstance(ok, bool) else None,
               str(item.get("note", "")))


def _markdown_rows(text: str) -> list[Row]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0] == "metric":
            continue
        verdict = cells[3].lower() if len(cells) > 3 else ""
        rows.append(Row(f"tunnel: {cells[0]}", cells[1], "", cells[2] if len(cells) > 2 else "",
                        True if verdict.startswith("pass") else False if verdict.startswith("miss") else None))
    return rows
