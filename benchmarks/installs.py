"""The two columns as users install them: our package and the original 0.2.0, each in a cached venv.

Ours is built from the working tree with `pip install DIR` (a wheel install,
never `-e`: an editable finder costs every start several milliseconds) into
~/.cache/rhl-bench/ours-HASH ($XDG_CACHE_HOME if set), HASH covering the
package's files, pyproject.toml and the interpreter, so each source state is
built once. The original is `pip install remote-http-launcher==0.2.0` into
~/.cache/rhl-bench/original-0.2.0. Both venvs are made with the benchmark's
own interpreter and byte-compiled by pip (and compileall, whatever the
caller's environment said), and both are run alike: `VENV/bin/python -m
remote_http_launcher` from an empty working directory outside the repository
(`-m` puts the working directory first on sys.path: from the repository root
it would import the source tree instead), reading the bytecode pip wrote.

`probe_import` checks what a measured command line really imports, by running
it once more with `python -v`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import PYTHON, ROOT, base_env, log, run_cwd

PACKAGE = "remote_http_launcher"
DISTRIBUTION = "remote-http-launcher"
MARKER = "rhl-bench-ready.json"
PIP_TIMEOUT = 600
KEEP_BUILDS = 3  # ours-HASH venvs kept in the cache (the newest); older source states are removed
# `python -v` names the file each module's code came from: a .pyc read, or a .py compiled on the spot.
CODE_FROM = re.compile(r"^# code object from '?([^']+?)'?$")
# Our package's __init__, or the original's single module, as source or bytecode.
MODULE_CODE = re.compile(rf"/({PACKAGE}/(__pycache__/)?__init__|(__pycache__/)?{PACKAGE})([.]cpython-\d+)?[.]pyc?$")
EDITABLE_PTH = re.compile(r"^Processing \.pth file: '.*__editable__[^']*'")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rhl-bench"


@dataclass
class Install:
    """One installed launcher: the venv's python (a symlink to the real binary, no shim) and its package file."""

    label: str
    venv: Path
    python: str
    module_file: str
    version: str
    editable: bool

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [self.python, "-m", PACKAGE, *map(str, args)]

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "venv": str(self.venv), "python": self.python,
                "python_real": os.path.realpath(self.python), "module": self.module_file, "version": self.version,
                "editable": self.editable}

    def header(self) -> str:
        kind = "editable" if self.editable else "not editable (wheel install)"
        return f"{self.label}: {self.module_file} ({kind}, version {self.version}, {self.python})"


def _interpreter_id() -> dict[str, str]:
    """What a cached venv must match: the benchmark's base interpreter."""
    base = getattr(sys, "_base_executable", sys.executable)
    return {"python_version": sys.version, "base_executable": os.path.realpath(base), "base_prefix": sys.base_prefix}


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONPATH", "PYTHONHOME",
                        "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX",
                        "PIP_NO_COMPILE", "PIP_EDITABLE")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
         cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env if env is not None else _build_env(), cwd=cwd or run_cwd(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        tail = [line for line in lines if line.startswith("ERROR")][-2:] or lines[-2:]  # pip's own verdict first
        raise RuntimeError(f"`{' '.join(argv[:4])} ...` exited {proc.returncode}: {' | '.join(tail)[:400]}")
    return proc


PROBE = (f"import importlib.metadata as m, json, sys, {PACKAGE} as r\n"
         f"d = m.distribution({DISTRIBUTION!r})\n"
         "u = json.loads(d.read_text('direct_url.json') or '{}')\n"
         "print(json.dumps({'version': d.version, 'file': r.__file__, 'prefix': sys.prefix,\n"
         "                  'editable': bool(u.get('dir_info', {}).get('editable'))\n"
         "                  or any('__editable__' in type(f).__module__ for f in sys.meta_path)}))\n"
         )


def probe(label: str, python: str, venv: Path, env: dict[str, str] | None = None) -> Install:
    """What `python -m remote_http_launcher` imports when run as the benchmark runs it (same cwd, environment)."""
    out = json.loads(_run([python, "-c", PROBE], 60, env=env or base_env()).stdout)
    return Install(label, venv, python, out["file"], out["version"], out["editable"])


def _make_venv(venv: Path, requirement: str) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    log(f"installing {requirement} into {venv} (once; cached for later runs)")
    try:
        # PYTHON may be a venv's python: `-m venv` then bases the new venv on the same real interpreter.
        _run([PYTHON, "-m", "venv", str(venv)], 300)
        vpy = str(venv / "bin" / "python")
        _run([vpy, "-m", "pip", "install", "--quiet", "--retries", "2", "--timeout", "30", requirement],
             PIP_TIMEOUT)
        # pip byte-compiles what it installs; make sure of it, whatever the caller's environment said.
        site = _run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60).stdout.strip()
        _run([vpy, "-m", "compileall", "-q", site], 300)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # no half-made venv left in the cache
        raise


def _cached(venv: Path, ident: dict[str, Any], build: Callable[[], None], label: str,
            check: Callable[[Install], Install]) -> Install:
    """The venv at `venv` if its marker matches `ident`, else built by `build()`; `check` validates the probe."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:  # two benchmark runs must not both install
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            marker = json.loads((venv / MARKER).read_text())
        except (OSError, ValueError):
            marker = None
        python = str(venv / "bin" / "python")
        if marker == ident:
            try:
                return check(probe(label, python, venv))
            except (OSError, RuntimeError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                log(f"cached {label} unusable ({exc}); reinstalling")
        build()
        installed = check(probe(label, python, venv))
        (venv / MARKER).write_text(json.dumps(ident, indent=2) + "\n")
        return installed


def _check_in(venv: Path, version: str | None = None) -> Callable[[Install], Install]:
    def check(found: Install) -> Install:
        if "/shims/" in os.path.realpath(found.python):
            raise RuntimeError(f"{found.python} resolves to a pyenv shim")
        if version is not None and found.version != version:
            raise RuntimeError(f"{venv} holds {DISTRIBUTION} {found.version}, not {version}")
        if not os.path.realpath(found.module_file).startswith(os.path.realpath(venv) + os.sep):
            raise RuntimeError(f"{PACKAGE} imports from {found.module_file}, not from {venv}")
        if found.editable:
            raise RuntimeError(f"{venv} holds an editable install")
        return found
    return check


def source_files() -> list[Path]:
    """What the wheel is built from: the package's files and pyproject.toml (README.md rides along unhashed)."""
    files = [p for p in (ROOT / PACKAGE).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo"))]
    return [*sorted(files), ROOT / "pyproject.toml"]


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_ours() -> Install:
    """Our package from this working tree, installed as users install it (cached per source state)."""
    digest = source_hash()
    venv = cache_root() / f"ours-{digest}"

    def build() -> None:
        with tempfile.TemporaryDirectory(prefix="rhlbench-src-") as tmp:
            # A copy: building in the repository would leave build/ and *.egg-info there.
            src = Path(tmp) / "src"
            for path in [*source_files(), ROOT / "README.md"]:
                target = src / path.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            _make_venv(venv, str(src))
        _prune(venv)

    return _cached(venv, {"source": digest, **_interpreter_id()}, build, "ours", _check_in(venv))


def _prune(keep: Path) -> None:
    """Drop all but the newest KEEP_BUILDS builds of ours (never `keep`)."""
    builds = sorted(cache_root().glob("ours-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [b for b in builds if b.is_dir() and b != keep][KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_original(version: str, env: dict[str, str]) -> Install:
    """PyPI remote-http-launcher==VERSION in its own cached venv; `env` is how it will be run."""
    venv = cache_root() / f"original-{version}"

    def build() -> None:
        _make_venv(venv, f"{DISTRIBUTION}=={version}")

    check = _check_in(venv, version)
    found = _cached(venv, {"version": version, **_interpreter_id()}, build, f"original {version}", check)
    return check(probe(found.label, found.python, venv, env))


def probe_import(argv: list[str], env: dict[str, str], cwd: str | None = None) -> dict[str, Any]:
    """Run a measured command line once more with `python -v`: where its package's code came from.

    Returns the file of remote_http_launcher's code (a .pyc means bytecode was
    read, a .py that it was compiled on the spot), and whether an editable
    finder's .pth was processed at start-up.
    """
    proc = subprocess.run([argv[0], "-v", *argv[1:]], env=env, cwd=cwd or run_cwd(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    code_file, editable = "", False
    for line in proc.stderr.splitlines():
        if EDITABLE_PTH.match(line):
            editable = True
        match = CODE_FROM.match(line)
        if match and not code_file and MODULE_CODE.search(match[1]):
            code_file = match[1]
    return {"code_from": code_file or "not imported?", "bytecode": code_file.endswith(".pyc"),
            "editable_finder": editable, "exit": proc.returncode}
