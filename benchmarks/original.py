"""The original implementation, PyPI `remote-http-launcher==0.2.0`, measured beside ours in the same run.

It is installed once into a venv cached under ~/.cache/rhl-bench/original-0.2.0
(benchmarks/installs.py, as ours is). If that fails (no network, no pip), the
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
same environment, from the same empty working directory, reading the bytecode
pip wrote. Over SSH it runs the `ssh` binary, which reads ~/.ssh/config of
the real user whatever $HOME says; `ssh_wrapper` gives it the benchmark's.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .common import base_env, log
from .installs import Install
from .installs import ensure_original as install_original

ORIGINAL_VERSION = "0.2.0"


class Original:
    """How the original is run: its install, with an environment of its own."""

    def __init__(self, install: Install) -> None:
        self.install = install

    def argv(self, config: str | os.PathLike[str], *extra: str) -> list[str]:
        return self.install.argv(config, *extra)

    @staticmethod
    def env(home: Path, path_prefix: Path | None = None) -> dict[str, str]:
        """base_env() (agent and terminal dropped) with its own $HOME, and `path_prefix` first on PATH."""
        env = base_env(HOME=str(home))
        env.pop("REMOTE_HTTP_LAUNCHER_DIR", None)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    @staticmethod
    def state_dir(home: Path) -> Path:
        return home / ".remote-http-launcher"

    def describe(self) -> dict[str, object]:
        return self.install.describe()


def ssh_wrapper(bin_dir: Path, ssh_config: Path) -> Path:
    """An `ssh` in bin_dir that runs the real one with `-F ssh_config` (put bin_dir first on PATH)."""
    real = shutil.which("ssh")
    if real is None:
        raise RuntimeError("no ssh client installed")
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {real} -F "{ssh_config}" "$@"\n')
    wrapper.chmod(stat.S_IRWXU)
    return bin_dir


def ensure_original(scratch: Path) -> Original | str:
    """The cached (or freshly installed) original, or a one-line reason why it is not available."""
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return Original(install_original(ORIGINAL_VERSION, Original.env(scratch)))
    except Exception as exc:  # never crash the suite over the comparison
        reason = f"original {ORIGINAL_VERSION} not available: {exc}".replace("\n", " ")[:300]
        log(reason)
        return reason
