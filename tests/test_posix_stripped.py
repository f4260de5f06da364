"""The POSIX-stripped interpreter (tests/posix_stripped) really strips, so the Windows-client run cannot rot.

CI runs the SSH, tunnel and lifecycle suites a second time with the CLIENT side
in an interpreter without POSIX-only APIs (see the sitecustomize's docstring).
These tests start such interpreters and check that every API of the brief is
gone, that children (the CLI, the keeper) inherit the stripping, that the
harness still gets the originals from tests/posix.py, and that the package
imports there. In the stripped run itself they also check that the session
really is stripped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import run
from remote_http_launcher.commands.stop import stop_keeper
from tests import posix
from tests.conftest import ROOT
from tests.ssh_client import ALIAS, demo_config, node_key, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

# The brief's list, kept here independently of the sitecustomize's own (which may only grow).
GONE_OS = ("setsid", "killpg", "getuid", "geteuid", "getpgid", "setpgid", "fork", "forkpty")
GONE_SIGNALS = ("SIGKILL", "SIGHUP", "SIGCHLD", "SIGPIPE", "SIGALRM", "SIGQUIT", "SIGUSR1", "SIGUSR2")
GONE_MODULES = ("fcntl", "pwd", "grp", "termios", "tty", "pty", "resource")

PROBE = r"""
import importlib, json, os, signal, subprocess, sys
stash = sys.modules.get("rhl_posix_stash")
report = {"stripped": stash is not None, "env": os.environ.get("RHL_POSIX_STRIPPED"),
          "pythonpath": os.environ.get("PYTHONPATH", ""), "username": os.environ.get("USERNAME")}
if stash is not None:
    report["os_present"] = [n for n in [*stash.os_functions, *sys.argv[1].split()] if hasattr(os, n)]
    import posix as posix_module, _signal
    report["posix_present"] = [n for n in stash.os_functions if hasattr(posix_module, n)]
    names = [*stash.signal_names, *sys.argv[2].split()]
    report["signal_present"] = [n for n in names if hasattr(signal, n) or hasattr(_signal, n)]
    report["enum_members"] = sorted(signal.Signals.__members__)
    report["stashed_signals"] = sorted(stash.signal_names)
    report["stashed_os"] = sorted(stash.os_functions)
    imported = {}
    for name in sys.argv[3].split():
        try:
            importlib.import_module(name)
            imported[name] = "imported"
        except ModuleNotFoundError as exc:
            imported[name] = type(exc).__name__ + ": " + str(exc)
    report["imports"] = imported
    report["leaked"] = [n for n in stash.MODULES if sys.modules.get(n) is not None]
    import getpass
    report["getpass"] = getpass.getpass.__name__
    sleeper = subprocess.Popen(["sleep", "60"])
    sleeper.kill()
    report["kill"] = sleeper.wait(10)
    sys.path.insert(0, sys.argv[4])
    from tests import posix
    report["harness"] = [posix.STRIPPED, posix.SIGKILL == stash.signal_names["SIGKILL"], posix.getuid() == 0 or
                         posix.getuid() > 0, posix.pwd.getpwuid(posix.getuid()).pw_uid == posix.getuid(),
                         callable(posix.pty.openpty), posix.termios.ECHO > 0, callable(posix.killpg)]
    report["leaked_after_harness"] = [n for n in stash.MODULES if sys.modules.get(n) is not None]
    child = subprocess.run([sys.executable, "-c", "import sys, os; print('rhl_posix_stash' in sys.modules)"],
                           capture_output=True, text=True, cwd="/", env={**os.environ, "RHL_POSIX_STRIPPED": ""})
    report["grandchild"] = child.stdout.strip()
print(json.dumps(report))
"""


def probe(pythonpath: str, cwd: Path, **env: str) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", posix.ENV)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, " ".join(GONE_OS), " ".join(GONE_SIGNALS), " ".join(GONE_MODULES), str(ROOT)],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**environ, "PYTHONPATH": pythonpath, **env},
        stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_the_stripped_interpreter_has_none_of_the_posix_only_apis(tmp_path: Path, relative: bool) -> None:
    pythonpath = os.path.relpath(posix.STRIPPED_DIR, ROOT) if relative else str(posix.STRIPPED_DIR)
    report = probe(pythonpath, ROOT)
    assert report["stripped"] and report["env"] == "1"
    assert report["pythonpath"].split(os.pathsep)[0] == str(posix.STRIPPED_DIR)  # absolute, for children elsewhere
    assert set(GONE_OS) <= set(report["stashed_os"]) and set(GONE_SIGNALS) <= set(report["stashed_signals"])
    assert report["os_present"] == [] and report["posix_present"] == [] and report["signal_present"] == []
    assert set(report["enum_members"]) <= {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM"}
    for name in GONE_MODULES:
        assert report["imports"][name].startswith(f"ModuleNotFoundError: No module named '{name}'"), report["imports"]
    assert report["leaked"] == [] and report["leaked_after_harness"] == []
    # Modelling: getpass keeps a no-echo terminal read (Windows: the console's); Popen.kill() kills (TerminateProcess)
    assert report["getpass"] == "unix_getpass" and report["kill"] == -9
    assert all(report["harness"]), report["harness"]  # tests/posix.py hands the harness the originals
    assert report["grandchild"] == "True"  # a child started elsewhere with the inherited environment (the keeper)
    assert report["username"] or os.environ.get("USER") or os.environ.get("LOGNAME")


def test_stripping_is_off_with_the_variable_at_0(tmp_path: Path) -> None:
    report = probe(str(posix.STRIPPED_DIR), tmp_path, RHL_POSIX_STRIPPED="0")
    assert not report["stripped"] and report["env"] == "0"


def test_every_package_module_imports_stripped(tmp_path: Path) -> None:
    """A top-level POSIX-only import anywhere in the package fails here, before any suite runs."""
    code = ("import importlib, pkgutil, remote_http_launcher as p\n"
            "names = [m.name for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')\n"
            "         if not m.name.endswith('.__main__')]  # those run the program\n"
            "for name in names: importlib.import_module(name)\n"
            "import sys; print(len(names), 'rhl_posix_stash' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(posix.STRIPPED_DIR)}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "True", result.stdout


@pytest.mark.skipif(os.environ.get(posix.ENV, "0") == "0", reason="only in the POSIX-stripped run")
def test_this_session_is_stripped() -> None:
    """RHL_POSIX_STRIPPED=1 on the command line is a promise: a run without the PYTHONPATH fails here."""
    assert posix.STRIPPED, "RHL_POSIX_STRIPPED=1 but tests/posix_stripped is not on PYTHONPATH"
    assert not hasattr(os, "killpg") and "fcntl" not in sys.modules
    assert str(posix.STRIPPED_DIR) in os.environ["PYTHONPATH"].split(os.pathsep)


@pytest.mark.skipif(not posix.STRIPPED, reason="only in the POSIX-stripped run")
def test_the_keeper_the_package_starts_is_stripped(sshd: SSHServer, remote_demo: str, client_home: Path,
                                                   rhl_dir: Path, request: pytest.FixtureRequest) -> None:
    """The tunnel keeper (sys.executable -m remote_http_launcher.keeper, started by the package) inherits it."""
    sshd.start()
    sshd.write_ssh_config(client_home, ALIAS)
    config = demo_config(sshd, remote_demo, node_key("strip-", request.node.name), network_interface="127.0.0.1",
                         tunnel=True)
    try:
        payload = run(config)
        raw = Path(f"/proc/{payload['keeper_pid']}/environ").read_bytes().decode(errors="replace")
        environ = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        assert environ.get(posix.ENV) == "1"
        assert environ["PYTHONPATH"].split(os.pathsep)[0] == str(posix.STRIPPED_DIR)
    finally:
        stop_keeper(config["key"], rhl_dir / "client", timeout=3)
        sshd.run(stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"'))
