"""The client's Windows branches, run on Linux: the logic is real, only the Windows seams are stand-ins.

Seams: `sys.platform` (what the branches test), `processes.kernel32()` (ctypes' windll), and
`subprocess.Popen` where Windows-only creation flags would reach CreateProcess. Everything the
branches compute, retry, choose and log is the package's own code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from remote_http_launcher import LauncherError, processes, statefiles
from remote_http_launcher.ssh import agent
from remote_http_launcher.ssh.config import resolve
from remote_http_launcher.ssh.proxy import CommandSocket
from remote_http_launcher.tunnels import daemon

HANDLE = 4242


class FakeKernel32:
    """kernel32 as the process functions use it: one process, running or exited, with a creation time."""

    def __init__(self, *, exists: bool = True, running: bool = True) -> None:
        self.exists, self.running = exists, running
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", (access, inherit, pid)))
        return HANDLE if self.exists else 0

    def GetExitCodeProcess(self, handle: int, code: Any) -> int:
        self.calls.append(("GetExitCodeProcess", (handle,)))
        code._obj.value = processes.STILL_ACTIVE if self.running else 0
        return 1

    def GetProcessTimes(self, handle: int, created: Any, *others: Any) -> int:
        created._obj.dwHighDateTime, created._obj.dwLowDateTime = 31, 2718
        return 1

    def TerminateProcess(self, handle: int, code: int) -> int:
        self.calls.append(("TerminateProcess", (handle, code)))
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", (handle,)))
        return 1

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def on_windows(mocker: MockerFixture) -> None:
    mocker.patch.object(sys, "platform", "win32")


def use_kernel32(mocker: MockerFixture, fake: FakeKernel32) -> FakeKernel32:
    mocker.patch.object(processes, "kernel32", return_value=fake)
    return fake


# ---------------------------------------------------------------- process identity and signals

def test_identity_of_a_running_process_is_its_creation_time(on_windows: None, mocker: MockerFixture) -> None:
    fake = use_kernel32(mocker, FakeKernel32())
    kill = mocker.spy(os, "kill")
    assert processes.process_identity(1234) == "win:31:2718"
    assert processes.owned_identity(1234) == "win:31:2718"
    assert kill.call_count == 0  # never os.kill(pid, 0): that is CTRL_C_EVENT on Windows
    assert fake.calls[0] == ("OpenProcess", (processes.PROCESS_QUERY_LIMITED_INFORMATION, False, 1234))
    assert fake.names().count("CloseHandle") == fake.names().count("OpenProcess")


@pytest.mark.parametrize("fake", [FakeKernel32(exists=False), FakeKernel32(running=False)], ids=["gone", "exited"])
def test_a_gone_or_exited_process_has_no_identity(on_windows: None, mocker: MockerFixture, fake: FakeKernel32) -> None:
    use_kernel32(mocker, fake)
    assert processes.process_identity(1234) is None
    assert processes.process_cmdline(1234) is None  # not readable on Windows: the start time has to do


def test_terminate_is_terminateprocess_and_only_for_a_running_process(on_windows: None,
                                                                     mocker: MockerFixture) -> None:
    fake = use_kernel32(mocker, FakeKernel32())
    kill = mocker.spy(os, "kill")
    assert processes.terminate(1234) is True and processes.terminate(1234, force=True) is True
    assert ("TerminateProcess", (HANDLE, processes.TERMINATED_EXIT_CODE)) in fake.calls and kill.call_count == 0
    exited = use_kernel32(mocker, FakeKernel32(running=False))
    assert processes.terminate(1234) is False and "TerminateProcess" not in exited.names()
    assert "CloseHandle" in exited.names()


# ---------------------------------------------------------------- replacing files other runs have open

def flaky_replace(mocker: MockerFixture, failures: int) -> list[int]:
    real = os.replace
    attempts: list[int] = []

    def replace(source: Any, target: Any) -> None:
        attempts.append(1)
        if len(attempts) <= failures:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real(source, target)

    mocker.patch.object(os, "replace", side_effect=replace)
    return attempts


def test_a_sharing_violation_is_retried_until_the_reader_lets_go(on_windows: None, mocker: MockerFixture,
                                                                  tmp_path: Path) -> None:
    attempts = flaky_replace(mocker, failures=2)
    statefiles.write_atomic(tmp_path / "client.json", b"{}")
    assert len(attempts) == 3 and (tmp_path / "client.json").read_bytes() == b"{}"
    assert [p.name for p in tmp_path.iterdir()] == ["client.json"]  # no temp file left


def test_a_file_held_open_for_good_is_a_one_line_error(on_windows: None, mocker: MockerFixture,
                                                       tmp_path: Path) -> None:
    flaky_replace(mocker, failures=1000)
    start_time = time.monotonic()
    with pytest.raises(LauncherError, match=r"^state file .*client\.json: .*another program keeps it open"):
        statefiles.write_atomic(tmp_path / "client.json", b"{}")
    assert time.monotonic() - start_time < 3  # bounded
    assert list(tmp_path.iterdir()) == []


def test_reads_are_retried_too(on_windows: None, mocker: MockerFixture, tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(b"held")
    real = Path.read_bytes
    failures = iter([True, True, False])

    def read_bytes(self: Path) -> bytes:
        if next(failures):
            raise PermissionError(13, "sharing violation")
        return real(self)

    mocker.patch.object(Path, "read_bytes", read_bytes)
    assert statefiles.read_bytes(path) == b"held"


def test_on_posix_a_permission_error_is_not_retried(mocker: MockerFixture, tmp_path: Path) -> None:
    attempts = flaky_replace(mocker, failures=1)
    with pytest.raises(PermissionError):
        statefiles.replace(tmp_path / "a", tmp_path / "b")
    assert len(attempts) == 1


# ---------------------------------------------------------------- detaching the keeper

def test_the_keeper_leaves_the_terminals_job_when_it_may(on_windows: None, mocker: MockerFixture) -> None:
    popen = mocker.patch.object(subprocess, "Popen")
    daemon.popen_detached(["keeper"], stdout=subprocess.PIPE)
    flags = popen.call_args.kwargs["creationflags"]
    assert flags == daemon.DETACHED_PROCESS | daemon.CREATE_NEW_PROCESS_GROUP | daemon.CREATE_BREAKAWAY_FROM_JOB
    assert "start_new_session" not in popen.call_args.kwargs


def test_a_job_that_refuses_breakaway_gets_the_keeper_inside_it_logged(
        on_windows: None, mocker: MockerFixture, caplog: pytest.LogCaptureFixture) -> None:
    started = object()

    def refuse_breakaway(argv: list[str], *, creationflags: int, **options: Any) -> object:
        if creationflags & daemon.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(5, "Access is denied")
        return started

    mocker.patch.object(subprocess, "Popen", side_effect=refuse_breakaway)
    with caplog.at_level(logging.INFO, logger="remote_http_launcher.tunnel"):
        process: object = daemon.popen_detached(["keeper"])
    assert process is started
    assert "cannot leave this terminal's job" in caplog.text and "closing the terminal ends the tunnel" in caplog.text


def test_on_posix_the_keeper_gets_its_own_session(mocker: MockerFixture) -> None:
    popen = mocker.patch.object(subprocess, "Popen")
    daemon.popen_detached(["keeper"])
    assert popen.call_args.kwargs == {"start_new_session": True}


# ---------------------------------------------------------------- ProxyCommand without select()

def test_proxycommand_stream_reads_in_a_thread_with_a_timeout() -> None:
    stream = CommandSocket("cat")  # echoes what the SSH client sends
    try:
        stream.settimeout(0.2)
        with pytest.raises(TimeoutError):
            stream.recv(10)  # nothing yet: paramiko's polling sees a timeout, as from a socket
        assert stream.send(b"SSH-2.0-test\r\n") == 14
        received = b""
        while len(received) < 14:
            received += stream.recv(64)
        assert received == b"SSH-2.0-test\r\n"
    finally:
        stream.close()
    assert stream.process.poll() is not None  # the command is ended, not orphaned


def test_proxycommand_end_of_output_reads_empty() -> None:
    stream = CommandSocket("printf hello")
    stream.settimeout(5)
    data = b""
    while chunk := stream.recv(3):
        data += chunk
    assert data == b"hello"
    stream.close()


def test_proxycommand_stream_closes_under_a_running_transport() -> None:
    """paramiko's Transport.close() polls the socket's `_closed` while its thread still runs."""
    import threading

    import paramiko

    stream = CommandSocket("sleep 30")  # never answers: the transport's thread waits for a banner
    transport = paramiko.Transport(stream)  # type: ignore[arg-type]
    transport.start_client(event=threading.Event())  # returns at once, its thread running
    assert transport.is_alive()
    transport.close()
    assert stream._closed and stream.process.poll() is not None
    transport.join(5)
    assert not transport.is_alive()


# ---------------------------------------------------------------- agents and names

def test_identityagent_pipe_on_windows(on_windows: None, mocker: MockerFixture, tmp_path: Path) -> None:
    """A named pipe (here a FIFO, which Linux lets one process read and write) carries the agent's bytes."""
    fifo = tmp_path / "openssh-ssh-agent"
    os.mkfifo(fifo)
    over = mocker.patch.object(agent, "agent_over")
    assert agent.open_agent(str(fifo)) is over.return_value
    connection = over.call_args.args[0]
    assert isinstance(connection, agent.PipeConnection)
    assert connection.send(b"\x00\x00\x00\x01\x0b") == 5 and connection.recv(5) == b"\x00\x00\x00\x01\x0b"
    connection.close()


def test_identityagent_none_and_an_unset_variable_mean_no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RHL_NO_SUCH_AGENT", raising=False)
    assert agent.open_agent("none") is None and agent.open_agent("$RHL_NO_SUCH_AGENT") is None


def test_the_user_name_comes_from_username_when_user_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from remote_http_launcher.ssh._paramiko import paramiko

    for name in ("LOGNAME", "USER", "LNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USERNAME", "winuser")
    assert resolve(paramiko.SSHConfig(), "server.example.org").user == "winuser"


def test_ctypes_byref_keeps_the_object_the_fake_writes_to() -> None:
    """The seam above relies on this: what GetExitCodeProcess gets is a reference to our DWORD."""
    from ctypes import wintypes

    code = wintypes.DWORD()
    reference: Any = ctypes.byref(code)
    reference._obj.value = 7
    assert code.value == 7


def test_home_is_found_only_the_way_that_works_on_windows_too() -> None:
    """os.path.expanduser and Path.home() use %USERPROFILE% on Windows (where Windows OpenSSH keeps
    .ssh/config and known_hosts); $HOME or the pwd database would be wrong there, so no client code uses them."""
    import ast

    import remote_http_launcher

    def posix_only(tree: ast.AST) -> set[ast.AST]:
        """What runs only after an early `if sys.platform == "win32": return` in a function (the one way
        a POSIX-only module may be imported: lazily, where Windows never gets)."""
        found: set[ast.AST] = set()
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for index, statement in enumerate(function.body):
                if isinstance(statement, ast.If) and ast.unparse(statement.test) == "sys.platform == 'win32'" \
                        and isinstance(statement.body[-1], ast.Return):
                    found.update(node for rest in function.body[index + 1:] for node in ast.walk(rest))
                    break
        return found

    offenders = []
    for path in Path(remote_http_launcher.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = posix_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "HOME":
                offenders.append(f"{path.name}:{node.lineno}: $HOME")
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in guarded:
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                offenders += [f"{path.name}:{node.lineno}: imports {name}" for name in names
                              if name.split(".")[0] in ("pwd", "grp", "termios", "fcntl", "tty", "pty", "resource")]
    assert offenders == []



# ---------------------------------------------------------------- Kerberos through SSPI

class FakeSSPIContext:
    """What pyspnego's SSPI context does on a Windows signed in without a domain account: the first
    InitializeSecurityContext finds no credentials (SEC_E_NO_CREDENTIALS, pyspnego's NoCredentialError)."""

    complete = False

    def step(self, token: bytes | None = None) -> bytes | None:
        from spnego.exceptions import NoCredentialError

        raise NoCredentialError(context_msg="Processing security token")


def test_kerberos_on_windows_asks_sspi_for_host_principal_and_says_to_sign_in(on_windows: None,
                                                                               mocker: MockerFixture) -> None:
    """On Windows pyspnego's client is SSPI: it is asked for Kerberos to host/NAME (delegating when told);
    without a ticket the line says how Windows gets one (no kinit there)."""
    from remote_http_launcher.ssh import kerberos

    client = mocker.patch("spnego.client", return_value=FakeSSPIContext())
    result = kerberos.start("login.example.org", delegate=True)
    assert isinstance(result, kerberos.Unavailable)
    assert result.line == ("no Kerberos ticket (No credentials were supplied, or the credentials were unavailable "
                           "or inaccessible): sign in to Windows with your domain account")
    from spnego import ContextReq

    assert client.call_args.kwargs == {
        "hostname": "login.example.org", "service": "host", "protocol": "kerberos",
        "context_req": ContextReq.mutual_auth | ContextReq.integrity | ContextReq.delegate}


def test_the_kerberos_extra_brings_sspi_on_windows_and_gss_api_elsewhere() -> None:
    """`pip install remote-http-launcher[kerberos]` is all a user does: pyspnego on every platform, with
    sspilib (SSPI) on Windows, and the GSS-API bindings (built against the system's Kerberos) elsewhere only;
    read from the installed metadata, as pip reads it."""
    import importlib.metadata

    from packaging.requirements import Requirement

    def installed(platform: str) -> set[str]:
        """The distributions the kerberos extra installs there: ours, then pyspnego's own."""
        names: set[str] = set()
        for package, extra in (("remote-http-launcher", "kerberos"), ("pyspnego", "")):
            environment = {"sys_platform": platform, "extra": extra}
            for line in importlib.metadata.requires(package) or []:
                requirement = Requirement(line)
                wanted = package == "pyspnego" if requirement.marker is None else \
                    requirement.marker.evaluate(environment)
                if wanted:
                    names.add(requirement.name)
        return names

    assert {"pyspnego", "sspilib"} <= installed("win32") and not {"gssapi", "krb5"} & installed("win32")
    assert {"pyspnego", "gssapi", "krb5"} <= installed("linux") and "sspilib" not in installed("linux")
