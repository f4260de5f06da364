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
    return Row(metric, value, unit, f"≤ {limit:g} {unit}".strip(), value <= limit, note, samples)


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


def timed_run(argv: list[str], env: dict[str, str], *, timeout: float = 120.0, check: bool = True,
              cwd: str | os.PathLike[str] | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a whole process, from fork to exit."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
    return elapsed, proc


def launcher_argv(config: str | os.PathLike[str], *extra: str) -> list[str]:
    return [PYTHON, "-m", "remote_http_launcher", str(config), *extra]


_BYTECODE_DIR: list[str] = []  # made on first use


def bytecode_dir() -> str:
    """A private PYTHONPYCACHEPREFIX: compiled modules are cached as for an installed package, outside the repo."""
    if not _BYTECODE_DIR:
        _BYTECODE_DIR.append(tempfile.mkdtemp(prefix="rhlbench-pyc-"))
        CLEANUP.push("bytecode cache", lambda: shutil.rmtree(_BYTECODE_DIR[0], ignore_errors=True))
    return _BYTECODE_DIR[0]


def base_env(*, bytecode: bool = True, **overrides: str) -> dict[str, str]:
    """This environment minus anything that would change what the launcher does (agent, terminal).

    With `bytecode` (the default), modules are compiled once and cached, as
    `pip install` does; a PYTHONDONTWRITEBYTECODE=1 in the calling shell would
    otherwise make every run recompile the whole package from source.
    """
    drop = {"SSH_AUTH_SOCK", "PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME"}
    if bytecode:
        drop.add("PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = bytecode_dir()
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
