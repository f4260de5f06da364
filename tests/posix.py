"""POSIX for the test HARNESS, in the normal run and in the POSIX-stripped one.

The stripped run (tests/posix_stripped/sitecustomize.py, on PYTHONPATH) takes
POSIX-only APIs away from every Python process of the test session, so that
the launcher's client side is checked as Windows would run it. The harness
still needs them: starting sshd, users and network namespaces, killing
leftover process groups, ptys for terminal tests. It takes them from here:

    from tests.posix import SIGKILL, killpg, pty

In the normal run these are simply ``os.killpg``, ``signal.SIGKILL``, the
``pty`` module...; in the stripped run they are the originals the
sitecustomize kept in ``rhl_posix_stash`` (signal numbers as plain ints).
Only harness code may import this module: the package never does, and a test
must not hand these to the package either.

Child processes: a Python the harness starts inherits the stripping through
PYTHONPATH. Tests that set PYTHONPATH themselves must use ``python_path()``
so the child stays stripped; ``TAKE_TERMINAL_AND_RUN`` runs the CLI on a pty
that the harness makes its controlling terminal first.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "ENV", "SIGALRM", "SIGCHLD", "SIGCONT", "SIGHUP", "SIGKILL", "SIGPIPE", "SIGQUIT", "SIGSTOP", "SIGUSR1",
    "SIGUSR2", "STRIPPED", "STRIPPED_DIR", "TAKE_TERMINAL_AND_RUN", "chown", "fcntl", "fork", "getegid",
    "geteuid", "getgid", "getpgid", "getsid", "getuid", "grp", "killpg", "lchown", "patch_pytest", "pty", "pwd",
    "python_path", "resource", "setsid", "take_terminal", "termios", "tty", "unstripped_env",
]

STRIPPED_DIR = Path(__file__).resolve().parent / "posix_stripped"
ENV = "RHL_POSIX_STRIPPED"  # "1" in a stripped process (the sitecustomize sets it); "0" turns the stripping off
_STASH: Any = sys.modules.get("rhl_posix_stash")
#: True in a process the sitecustomize stripped (not merely one with RHL_POSIX_STRIPPED set).
STRIPPED: bool = _STASH is not None

# The CLI with the pty on its stdin as its controlling terminal, like a command typed in a shell. The harness
# takes the terminal (a POSIX ioctl) before the client code starts; needs the repository on PYTHONPATH.
TAKE_TERMINAL_AND_RUN = (
    "import sys; from tests.posix import take_terminal; take_terminal(0); "
    "from remote_http_launcher.cli import main; sys.exit(main())"
)


def _module(name: str) -> ModuleType:
    return _STASH.module(name) if STRIPPED else importlib.import_module(name)


def _os(name: str) -> Any:
    return _STASH.os_functions[name] if STRIPPED else getattr(os, name)


def _signal(name: str) -> Any:
    return _STASH.signal_names[name] if STRIPPED else getattr(signal, name)


if TYPE_CHECKING:
    import fcntl
    import grp
    import pty
    import pwd
    import resource
    import termios
    import tty
    from os import chown, fork, getegid, geteuid, getgid, getpgid, getsid, getuid, killpg, lchown, setsid
    from signal import SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGKILL, SIGPIPE, SIGQUIT, SIGSTOP, SIGUSR1, SIGUSR2
else:
    fcntl, grp, pty, pwd, resource, termios, tty = map(
        _module, ("fcntl", "grp", "pty", "pwd", "resource", "termios", "tty"))
    chown, fork, getegid, geteuid, getgid, getpgid, getsid, getuid, killpg, lchown, setsid = map(
        _os, ("chown", "fork", "getegid", "geteuid", "getgid", "getpgid", "getsid", "getuid", "killpg", "lchown",
              "setsid"))
    SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGKILL, SIGPIPE, SIGQUIT, SIGSTOP, SIGUSR1, SIGUSR2 = map(
        _signal, ("SIGALRM", "SIGCHLD", "SIGCONT", "SIGHUP", "SIGKILL", "SIGPIPE", "SIGQUIT", "SIGSTOP", "SIGUSR1",
                  "SIGUSR2"))


def python_path(*entries: str | Path) -> str:
    """A PYTHONPATH value for a child Python: `entries`, behind the stripping directory in a stripped run."""
    paths = [str(STRIPPED_DIR)] if STRIPPED else []
    return os.pathsep.join([*paths, *map(str, entries)])


def unstripped_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a harness child that needs a whole POSIX Python (pip, ...)."""
    return {**(os.environ if env is None else env), ENV: "0"}


def take_terminal(fd: int = 0) -> None:
    """Make the terminal open on `fd` this process's controlling terminal (it must lead a session without one)."""
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def patch_pytest() -> None:
    """pytest's tmp_path asks os.getuid() unless sys.platform is win32; in a stripped run it gets the original.

    (Its basetemp check: the per-user temp directory must be owned by the user running pytest.)
    """
    if not STRIPPED:
        return
    import _pytest.tmpdir

    if hasattr(_pytest.tmpdir, "get_user_id"):
        _pytest.tmpdir.get_user_id = getuid
