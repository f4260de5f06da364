"""Shared pieces: result rows, timing of whole processes, and cleanup that survives Ctrl-C."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TINY_SERVICE = Path(__file__).resolve().parent / "tiny_service.py"


def write_config(path: Path, data: dict[str, Any]) -> None:
    """A config file in block YAML, as people write them (and so as the launcher reads them most)."""
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False, width=2**16, allow_unicode=True))


def read_config(path: Path) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def real_python() -> str:
    """The interpreter binary itself: pyenv shims add a bash script and ~50 ms to every start."""
    exe = sys.executable
    if "/shims/" in exe:  # never the case when a shim exec'd python, but be explicit
        exe = os.path.realpath(exe)
    return exe


PYTHON = real_python()


@dataclass
class Row:
    """One line of the results table. `ok` is None when there is no target (reference values)."""

    metric: str
    value: float | str | None
    unit: str = "s"
    target: str = ""
    ok: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)
    limit: float | None = None  # the target as a number, so that repeated runs can be judged again
    at_least: bool = False  # the target is a floor (≥ limit), not a ceiling

    def shown_value(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, str):
            return self.value
        if self.unit == "s":
            return f"{self.value:.3f} s"
        if self.unit == "ms":
            return f"{self.value:.2f} ms"
        if self.unit == "µs":
            return f"{self.value:,.0f} µs"
        if self.unit in ("", "count"):
            return f"{self.value:g}"
        if self.unit == "×":
            return f"{self.value:.2f}×"
        return f"{self.value:g} {self.unit}"

    def verdict(self) -> str:
        return "" if self.ok is None else ("pass" if self.ok else "MISS")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass"] = data.pop("ok")
        return data


def at_most(metric: str, samples: list[float], limit: float, note: str = "", unit: str = "s") -> Row:
    value = statistics.median(samples)
    return Row(metric, value, unit, f"≤ {limit:g} {unit}".strip(), value <= limit, note, samples, limit)


def ratio(metric: str, value: float, limit: float, note: str = "", *, at_least: bool = False,
          samples: list[float] | None = None, of: str = "") -> Row:
    """A ratio with its target, e.g. ours / the original's at most 0.35, or ours / ssh -L at least 0.9."""
    target = f"{'≥' if at_least else '≤'} {limit:g}×" + (f" {of}" if of else "")
    ok = value >= limit if at_least else value <= limit
    return Row(metric, value, "×", target, ok, note, samples or [], limit, at_least)


def spread(values: list[float], unit: str = "×") -> str:
    """'lowest-highest' of several values, as the table shows them."""
    return f"{Row('', min(values), unit).shown_value()}–{Row('', max(values), unit).shown_value()}"


def combine(repeats: list[list[Row]]) -> list[Row]:
    """Rows of N repetitions of the same sections as one table: each number its median over the
    repetitions, judged again against its target, with the lowest and highest in the note."""
    if len(repeats) == 1:
        return repeats[0]
    by_metric: dict[str, list[Row]] = {}
    order: list[str] = []
    for rows in repeats:
        for row in rows:
            if row.metric not in by_metric:
                order.append(row.metric)
            by_metric.setdefault(row.metric, []).append(row)
    combined = []
    for metric in order:
        rows = by_metric[metric]
        numbers = [r.value for r in rows if isinstance(r.value, (int, float)) and not isinstance(r.value, bool)]
        first = rows[0]
        if len(numbers) != len(rows):  # text values: the last repetition's, and every verdict
            last = rows[-1]
            verdicts = [r.ok for r in rows if r.ok is not None]
            combined.append(Row(metric, last.value, last.unit, last.target,
                                all(verdicts) if verdicts else None,
                                "; ".join(filter(None, [last.note, f"the last of {len(rows)} runs"]))))
            continue
        value = statistics.median(numbers)
        ok = first.ok
        if first.limit is not None:
            ok = value >= first.limit if first.at_least else value <= first.limit
        elif first.ok is not None:
            ok = all(r.ok for r in rows)
        note = f"median of {len(rows)} runs, {spread(numbers, first.unit)}"
        if rows[-1].note:
            note += f"; last: {rows[-1].note}"
        combined.append(Row(metric, value, first.unit, first.target, ok, note,
                            [x for r in rows for x in r.samples], first.limit, first.at_least))
    return combined


def reference(metric: str, samples: list[float], note: str = "", unit: str = "s") -> Row:
    return Row(metric, statistics.median(samples), unit, "", None, note, samples)


def markdown(rows: list[Row]) -> str:
    lines = ["| metric | value | target | pass/miss |", "|---|---|---|---|"]
    for row in rows:
        metric = f"{row.metric} ({row.note})" if row.note else row.metric
        lines.append(f"| {metric} | {row.shown_value()} | {row.target} | {row.verdict()} |")
    return "\n".join(lines)


def dump_json(rows: list[Row], extra: dict[str, Any]) -> str:
    return json.dumps({"rows": [r.to_json() for r in rows], **extra}, indent=2, default=str)


_RUN_CWD: list[str] = []  # made on first use
_OURS_PYTHON: list[str] = []  # set by use_ours(); PYTHON (this checkout) until then


def run_cwd() -> str:
    """An empty working directory outside the repository for every measured process.

    `python -m` puts the working directory first on sys.path: run from the
    repository root, it would import the source tree, not the installed package.
    """
    if not _RUN_CWD:
        _RUN_CWD.append(tempfile.mkdtemp(prefix="rhlbench-cwd-"))
        CLEANUP.push("working directory", lambda: shutil.rmtree(_RUN_CWD[0], ignore_errors=True))
    return _RUN_CWD[0]


def use_ours(python: str) -> None:
    """Run our launcher with this interpreter (a venv's, holding the installed package) from now on."""
    _OURS_PYTHON[:] = [python]


def ours_python() -> str:
    return _OURS_PYTHON[0] if _OURS_PYTHON else PYTHON


def timed_run(argv: list[str], env: dict[str, str], *, timeout: float = 120.0, check: bool = True,
              cwd: str | os.PathLike[str] | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a whole process, from fork to exit (in run_cwd() unless `cwd` is given)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd or run_cwd(), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
    return elapsed, proc


def launcher_argv(config: str | os.PathLike[str], *extra: str) -> list[str]:
    """Our launcher as installed (use_ours), run as users run it."""
    return [ours_python(), "-m", "remote_http_launcher", str(config), *extra]


def base_env(**overrides: str) -> dict[str, str]:
    """This environment minus anything that would change what the launcher does (agent, terminal) or how
    Python loads it: modules come from the bytecode pip wrote beside them, as for a user; a
    PYTHONDONTWRITEBYTECODE=1 or a PYTHONPYCACHEPREFIX of the calling shell would change that."""
    drop = {"SSH_AUTH_SOCK", "PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE",
            "PYTHONPYCACHEPREFIX", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(overrides)
    return env


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Cleanup:
    """LIFO cleanup actions, run once: at the end, on an exception, on Ctrl-C, SIGTERM or exit."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], object]]] = []
        self.done = False
        atexit.register(self.run)

    def push(self, what: str, action: Callable[[], object]) -> None:
        self.actions.append((what, action))

    def run(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except BaseException as exc:  # keep cleaning whatever happened
                print(f"[bench] cleanup of {what} failed: {exc!r}", file=sys.stderr)

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_signal)


CLEANUP = Cleanup()


def kill_services_in(state_dir: Path) -> None:
    """SIGKILL the process group of every service whose status file is under state_dir/server."""
    for status in Path(state_dir).glob("server/*.json"):
        try:
            pid = json.loads(status.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int) and pid > 1:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment`."""
    needle = fragment.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline.replace(b"\0", b" "):
            found.append(int(entry.name))
    return found


def kill_processes_under(path: str | os.PathLike[str]) -> list[int]:
    """SIGKILL every process (but this one) whose command line names something under `path`.

    The safety net after kill_services_in: a service whose status record was lost
    (the original 0.2.0 lets its client file overwrite it) still has its status
    file's path in its command line.
    """
    prefix = str(path).rstrip("/") + "/"
    killed = []
    for pid in pids_with_cmdline(prefix):
        if pid in (os.getpid(), os.getppid()):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed
