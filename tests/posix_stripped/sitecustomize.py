"""A POSIX-stripped Python: the launcher's CLIENT side as Windows lets it be, checked on Linux CI.

The client (the CLI, the Python API, the tunnel keeper) must run on Windows:
no fork, no sessions or process groups, no uids, no fcntl/termios/pwd, only
the signals Windows' ``signal`` module has. This sitecustomize takes those
APIs away from a Linux interpreter, so the SSH, tunnel and lifecycle suites
prove the client never reaches for them. The server side (POSIX ``sh`` over
SSH, run by the server's own python) is not affected.

Activate it by putting this directory on PYTHONPATH::

    RHL_POSIX_STRIPPED=1 PYTHONPATH=tests/posix_stripped python -m pytest -q tests/test_ssh.py ...

Python imports ``sitecustomize`` at startup from the first sys.path entry that
has one, so the pytest process and every Python it starts with the inherited
environment (``python -m remote_http_launcher``, the keeper that the package
starts as ``sys.executable -m remote_http_launcher.keeper``) run stripped.
This module makes its PYTHONPATH entry absolute (children may start in other
directories) and sets RHL_POSIX_STRIPPED=1 in the environment; setting
RHL_POSIX_STRIPPED=0 turns it off (a plain interpreter for a harness child).

What is removed
---------------
* ``os`` (and ``posix``): OS_FUNCTIONS, the brief's list (setsid, killpg,
  getuid, geteuid, getpgid, setpgid, fork, forkpty) and more of the same
  families Windows lacks (sessions, process groups, uids/gids, chown, wait3/4,
  register_at_fork). ``os.kill`` stays: Windows has it (see below).
* ``signal`` (and ``_signal``): every name Windows' signal module lacks:
  SIGKILL, SIGHUP, SIGCHLD, SIGPIPE, SIGALRM, SIGQUIT, SIGUSR1, SIGUSR2, all
  other POSIX signals, and alarm/setitimer/pause/pthread_*/sig*wait*/...
  ``_signal`` is stripped before ``signal`` is imported, so ``signal.Signals``
  has only Windows' members too (signal.py builds it from what is there).
* Modules: MODULES (fcntl, pwd, grp, termios, tty, pty, resource) are refused
  by a ``sys.meta_path`` finder: ``import fcntl`` raises ModuleNotFoundError
  ("No module named 'fcntl' ..."), as on Windows.

The originals are kept in the module ``rhl_posix_stash`` (in sys.modules) for
the test HARNESS, which still needs POSIX (sshd, useradd, namespaces, killing
leftovers, ptys); it gets them through ``tests/posix.py``, never directly.
The package must never use either.

Modelling decisions and stdlib quirks
-------------------------------------
* ``subprocess.Popen.kill()`` sends ``signal.SIGKILL`` on POSIX, so it would
  raise AttributeError here. On Windows ``kill()`` is ``terminate()``, i.e.
  TerminateProcess, which the process cannot catch: the real SIGKILL is the
  faithful model, so ``Popen.kill`` is patched (when subprocess is imported,
  not before: the warm path must not import subprocess) to send it.
  ``Popen.terminate()`` still sends SIGTERM, which a handler can catch, where
  Windows' TerminateProcess cannot be caught: not modelled.
* ``getpass`` binds its ``getpass()`` at import: ``unix_getpass`` when
  ``import termios`` works, else ``fallback_getpass`` (reads stdin, echoes,
  warns). Windows gets ``win_getpass`` (console, no echo), so getpass is let
  import the real termios (and only getpass), which keeps a no-echo terminal
  read standing in for Windows' console read.
* ``getpass.getuser()`` reads LOGNAME/USER/LNAME/USERNAME and falls back to
  ``pwd`` (gone here, and on Windows). Windows always sets USERNAME; Linux CI
  containers often set none of them, so USERNAME is set here when all four
  are missing, from the real pwd entry.
* ``os.name`` stays "posix" and ``sys.platform`` "linux": code that branches
  on them still takes its POSIX branch here. Such a branch may use what stays
  (``os.kill(pid, 0)``, ``os.chmod``, ``start_new_session=True``...) but not a
  removed API: client code reaches a removed API only behind a feature test
  (``hasattr(os, "geteuid")``, ``getattr(signal, "SIGKILL", ...)``), which
  both Windows and this interpreter answer "no". Third-party code that checks
  ``sys.platform`` instead breaks here though fine on Windows: pytest's
  tmp_path calls ``os.getuid()`` (the harness patches it: tests/posix.py
  ``patch_pytest``); platformdirs (``from os import getuid``; its pytest
  plugin, installed with jupyter_core, must be left out: ``-p
  no:platformdirs``; jupyter_client imports it, so the notebook tests cannot
  run stripped); invoke (``import fcntl``; paramiko imports it only for
  ``Match exec``); pip (harness children that need it run with
  RHL_POSIX_STRIPPED=0: tests/posix.py ``unstripped_env``).
* ``os.kill`` keeps its POSIX meaning. On Windows ``os.kill(pid, 0)`` is a
  CTRL_C_EVENT and any other signal TerminateProcess: not modelled (the
  package's ``processes`` module uses it only on POSIX).
* ``subprocess``'s posix_spawn path resets SIGPIPE in the child through
  ``getattr(signal, "SIGPIPE", None)``: children started by that path (only
  ``close_fds=False`` with a path as executable) keep SIGPIPE ignored. The
  fork_exec path (the default) resets it in C, unaffected.
* ``multiprocessing`` (fork start method on Linux), ``pty.fork``,
  ``netrc.netrc()`` (``os.getuid`` on POSIX) and ``shutil.chown`` break;
  ``subprocess`` (``fcntl`` optional), ``tarfile``, ``mailbox`` and
  ``xmlrpc.server`` (optional fcntl/pwd/grp), ``posixpath.expanduser`` and
  ``pathlib`` (pwd optional or lazy) take their no-module paths, as on Windows.
  ``importlib.util.find_spec("fcntl")`` raises instead of returning None.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing would cost every stripped process milliseconds
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = "RHL_POSIX_STRIPPED"
STASH = "rhl_posix_stash"

MODULES = ("fcntl", "pwd", "grp", "termios", "tty", "pty", "resource")
OS_FUNCTIONS = (
    # the brief's list
    "setsid", "killpg", "getuid", "geteuid", "getpgid", "setpgid", "fork", "forkpty",
    # the same families, also absent on Windows
    "getsid", "getpgrp", "setpgrp", "tcgetpgrp", "tcsetpgrp", "register_at_fork", "wait3", "wait4",
    "getgid", "getegid", "getgroups", "setgroups", "initgroups", "getgrouplist", "setuid", "seteuid",
    "setgid", "setegid", "setreuid", "setregid", "getresuid", "getresgid", "setresuid", "setresgid",
    "chown", "lchown", "fchown",
)
# Everything of _signal that Windows' signal module also has; the rest goes.
SIGNAL_KEPT = frozenset({
    "NSIG", "SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIG_DFL", "SIG_IGN",
    "default_int_handler", "getsignal", "raise_signal", "set_wakeup_fd", "signal", "strsignal", "valid_signals",
})


def _strip() -> None:
    import _thread

    _signal: Any = __import__("_signal")  # the C module signal.py re-exports (no stub)

    stash: Any = type(sys)(STASH, "What tests/posix_stripped/sitecustomize.py removed; for tests/posix.py only.")
    stash.MODULES = MODULES
    stash.os_functions = {}  # name -> the original function
    stash.signal_names = {}  # name -> the original value (signal numbers as ints)
    stash.modules = {}  # name -> the real module, once loaded
    lock = _thread.RLock()
    bypass: set[int] = set()  # threads allowed to import MODULES (while loading them for the stash)

    # ----- os (and posix, where os's functions come from)
    for name in OS_FUNCTIONS:
        if hasattr(os, name):
            stash.os_functions[name] = getattr(os, name)
            delattr(os, name)
        posix = sys.modules.get("posix")
        if posix is not None and hasattr(posix, name):
            delattr(posix, name)
    os.__all__[:] = [name for name in os.__all__ if name not in stash.os_functions]

    # ----- signal: _signal before signal.py builds its enums from it
    for name in [n for n in vars(_signal) if not n.startswith("__") and n not in SIGNAL_KEPT]:
        stash.signal_names[name] = getattr(_signal, name)
        delattr(_signal, name)
    loaded_signal = sys.modules.get("signal")
    if loaded_signal is not None:  # imported before us (not in a plain startup): strip it and rebuild Signals
        import enum

        for name in stash.signal_names:
            if hasattr(loaded_signal, name):
                delattr(loaded_signal, name)
        enum.IntEnum._convert_("Signals", "signal",  # type: ignore[attr-defined]
                               lambda n: n.isupper() and n.startswith("SIG") and not n.startswith("SIG_"))

    # ----- the modules: loaded for the stash only, when the harness (or getpass) first asks
    def load(name: str) -> ModuleType:
        """The real POSIX module `name` (one of MODULES), imported on this thread only, then hidden again."""
        with lock:
            if name not in stash.modules:
                ident = _thread.get_ident()
                bypass.add(ident)
                sys.modules.update(stash.modules)  # pty imports tty imports termios: the same objects
                try:
                    __import__(name)
                finally:
                    bypass.discard(ident)
                    for each in MODULES:
                        found = sys.modules.pop(each, None)
                        if found is not None:
                            stash.modules[each] = found
            module: ModuleType = stash.modules[name]
            return module

    stash.module = load
    for name in MODULES:  # in case something imported them before us
        if sys.modules.get(name) is not None:
            stash.modules[name] = sys.modules.pop(name)

    # ----- stdlib modules patched as they load
    real_sigkill = stash.signal_names["SIGKILL"]

    def kill(self: Any) -> None:
        """Kill the process: TerminateProcess on Windows (kill() is terminate() there), the real SIGKILL here."""
        self.send_signal(real_sigkill)

    def exec_subprocess(loader: Any, module: ModuleType) -> None:
        loader.exec_module(module)
        module.Popen.kill = kill

    def exec_getpass(loader: Any, module: ModuleType) -> None:
        termios = load("termios")
        with lock:
            sys.modules["termios"] = termios
            try:
                loader.exec_module(module)
            finally:
                sys.modules.pop("termios", None)

    patches = {"subprocess": exec_subprocess, "getpass": exec_getpass}

    class PatchingLoader:
        """Runs a patch around the real loader's exec_module; everything else is the real loader's."""

        def __init__(self, loader: Any, patch: Any) -> None:
            self.loader = loader
            self.patch = patch

        def create_module(self, spec: Any) -> Any:
            return self.loader.create_module(spec)

        def exec_module(self, module: ModuleType) -> None:
            self.patch(self.loader, module)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.loader, name)

    class Stripper:
        """sys.meta_path finder: POSIX-only modules are not found; subprocess and getpass are patched."""

        @classmethod
        def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
            if name.partition(".")[0] in MODULES:
                if _thread.get_ident() in bypass:
                    return None
                raise ModuleNotFoundError(
                    f"No module named {name!r} (POSIX-only: removed by tests/posix_stripped/sitecustomize.py, "
                    "as on Windows)", name=name)
            if name in patches:
                for finder in sys.meta_path:
                    if finder is cls or not hasattr(finder, "find_spec"):
                        continue
                    spec: Any = finder.find_spec(name, path, target)
                    if spec is not None:
                        if spec.loader is not None:
                            spec.loader = PatchingLoader(spec.loader, patches[name])
                        return spec
            return None

    if "subprocess" in sys.modules:  # imported before us (not in a plain startup); getpass would be too late
        sys.modules["subprocess"].Popen.kill = kill
    sys.meta_path.insert(0, Stripper)
    sys.modules[STASH] = stash

    # ----- the environment children inherit
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    entries = [HERE if os.path.abspath(e) == HERE else e for e in entries]
    if HERE not in entries:
        entries.insert(0, HERE)
    os.environ["PYTHONPATH"] = os.pathsep.join(entries)
    os.environ[ENV] = "1"
    if not any(os.environ.get(n) for n in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        pwd: Any = load("pwd")
        os.environ["USERNAME"] = pwd.getpwuid(stash.os_functions["getuid"]()).pw_name


def _chain() -> None:
    """Run the sitecustomize this one shadows, if a later sys.path entry has one."""
    from importlib.machinery import PathFinder

    spec = PathFinder.find_spec("sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != HERE])
    running = getattr(sys.modules.get("sitecustomize"), "__file__", None)  # one that ran us: not again
    if spec is not None and spec.loader is not None and spec.origin != running:
        from importlib.util import module_from_spec

        module = module_from_spec(spec)
        sys.modules["_rhl_shadowed_sitecustomize"] = module
        spec.loader.exec_module(module)


if os.environ.get(ENV, "").strip() != "0" and STASH not in sys.modules:
    _strip()
_chain()
