"""The original implementation, PyPI `remote-http-launcher==0.2.0`, measured beside ours in the same run.

It is installed once into a throwaway venv made with the benchmark's own
interpreter (`python -m venv`, then `pip install remote-http-launcher==0.2.0`)
and cached under ~/.cache/rhl-bench/original-0.2.0 ($XDG_CACHE_HOME if set),
so later runs do not reinstall. If that fails (no network, no pip), the
comparison rows are reported as n/a with the reason; nothing here raises.

What 0.2.0 is, read from its wheel: one module, `remote_http_launcher.py`
(console script `remote-http-launcher = remote_http_launcher:main`, and
`python -m remote_http_launcher` works through its `__main__` guard), needing
only PyYAML. Its client files go to ~/.remote-http-launcher/client (Path.home(),
i.e. $HOME), its server files to `~/.remote-http-launcher/server` (a literal
`~`, expanded by the helper scripts and, in `{status_file}`, by bash). With
REMOTE_HTTP_LAUNCHER_DIR set it puts *both* in that one directory, so the client
file overwrites the server record of the same key (and with it the service's
pid); so it gets its own $HOME here, never that variable. Every local step
(status check, read, launch, port check, handshake) is `bash -lc "python3 -
<<heredoc"`: a login shell (which resets PATH, so `python3` is the system one)
and a fresh interpreter per step. `{network_interface}` is not in its template
namespace unless the config sets it, so the shared configs spell it out.

It is run exactly like ours: `VENV/bin/python -m remote_http_launcher CONFIG`
(the venv's python is a symlink to the real binary, no pyenv shim), with the
same environment and private bytecode cache, but from a scratch working
directory, since `-m` puts the working directory first on sys.path and the
repository root would import *our* package instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import PYTHON, base_env, log

ORIGINAL_VERSION = "0.2.0"
REQUIREMENT = f"remote-http-launcher=={ORIGINAL_VERSION}"
MARKER = "rhl-bench-ready.json"
PIP_TIMEOUT = 600


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rhl-bench" / f"original-{ORIGINAL_VERSION}"


@dataclass
class Original:
    """The installed original: how to run it, and the environment it gets."""

    venv: Path
    python: str
    module_file: str

    def argv(self, config: str | os.PathLike[str], *extra: str) -> list[str]:
        return [self.python, "-m", "remote_http_launcher", str(config), *extra]

    @staticmethod
    def env(home: Path) -> dict[str, str]:
        """base_env() (same bytecode cache, agent and terminal dropped) with its own $HOME."""
        env = base_env(HOME=str(home))
        for name in ("REMOTE_HTTP_LAUNCHER_DIR", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"):
            env.pop(name, None)
        return env

    @staticmethod
    def state_dir(home: Path) -> Path:
        return home / ".remote-http-launcher"

    def describe(self) -> dict[str, Any]:
        return {"version": ORIGINAL_VERSION, "venv": str(self.venv), "python": self.python,
                "python_real": os.path.realpath(self.python), "module": self.module_file}


def _interpreter_id() -> dict[str, str]:
    """What the cached venv must match: the benchmark's base interpreter."""
    base = getattr(sys, "_base_executable", sys.executable)
    return {"version": ORIGINAL_VERSION, "python_version": sys.version,
            "base_executable": os.path.realpath(base), "base_prefix": sys.base_prefix}


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONPATH", "PYTHONHOME",
                        "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX",
                        "PIP_NO_COMPILE")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
         cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env if env is not None else _build_env(), cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        tail = [line for line in lines if line.startswith("ERROR")][-2:] or lines[-2:]  # pip's own verdict first
        raise RuntimeError(f"`{' '.join(argv[:4])} ...` exited {proc.returncode}: {' | '.join(tail)[:400]}")
    return proc


def _probe(venv: Path, scratch: Path) -> Original:
    """Check that VENV/bin/python -m remote_http_launcher is the installed 0.2.0, run as the benchmark runs it."""
    python = str(venv / "bin" / "python")
    if "/shims/" in os.path.realpath(python):
        raise RuntimeError(f"{python} resolves to a pyenv shim")
    scratch.mkdir(parents=True, exist_ok=True)
    code = ("import importlib.metadata as m, remote_http_launcher as r, sys; "
            "print(m.version('remote-http-launcher')); print(r.__file__); print(sys.prefix)")
    out = _run([python, "-c", code], 60, env=Original.env(scratch), cwd=str(scratch)).stdout.split("\n")
    version, module_file = out[0].strip(), out[1].strip()
    if version != ORIGINAL_VERSION:
        raise RuntimeError(f"{venv} holds remote-http-launcher {version}, not {ORIGINAL_VERSION}")
    if not os.path.realpath(module_file).startswith(os.path.realpath(venv) + os.sep):
        raise RuntimeError(f"remote_http_launcher imports from {module_file}, not from {venv}")
    return Original(venv, python, module_file)


def _install(venv: Path) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    log(f"installing {REQUIREMENT} into {venv} (once; cached for later runs)")
    try:
        # PYTHON may be a venv's python: `-m venv` then bases the new venv on the same real interpreter.
        _run([PYTHON, "-m", "venv", str(venv)], 300)
        vpy = str(venv / "bin" / "python")
        _run([vpy, "-m", "pip", "install", "--quiet", "--retries", "2", "--timeout", "30", REQUIREMENT],
             PIP_TIMEOUT)
        # pip byte-compiles what it installs; make sure of it, whatever the caller's environment said.
        site = _run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60).stdout.strip()
        _run([vpy, "-m", "compileall", "-q", site], 300)
        (venv / MARKER).write_text(json.dumps(_interpreter_id(), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # no half-made venv left in the cache
        raise


def ensure_original(scratch: Path) -> Original | str:
    """The cached (or freshly installed) original, or a one-line reason why it is not available."""
    venv = cache_dir()
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.parent / f".{venv.name}.lock", "w") as lock:  # two benchmark runs must not both install
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                marker = json.loads((venv / MARKER).read_text())
            except (OSError, ValueError):
                marker = None
            if marker == _interpreter_id():
                try:
                    return _probe(venv, scratch)
                except (OSError, RuntimeError, subprocess.SubprocessError, IndexError) as exc:
                    log(f"cached original unusable ({exc}); reinstalling")
            _install(venv)
            return _probe(venv, scratch)
    except Exception as exc:  # never crash the suite over the comparison
        reason = f"original {ORIGINAL_VERSION} not available: {exc}".replace("\n", " ")[:300]
        log(reason)
        return reason
