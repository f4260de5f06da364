"""Kept remote `sh` sessions (ssh/shells.py) against the real sshd: exact output, stdin, exit codes, threads,
a session that dies, and the session's private directory; and Host.read_status_file (a status file with its
PID's start time in one step) on both hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher import statefiles
from remote_http_launcher.hosts import Host, LocalHost
from remote_http_launcher.hosts.base import SeenProcess
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.service import identity_problem
from remote_http_launcher.ssh.shells import MAX_SHELLS
from remote_http_launcher.statefiles import ServerState
from tests.ssh_client import ALIAS, REMOTE_STATE

if TYPE_CHECKING:
    from tests.sshd import SSHServer

SESSION_PID = "echo $PPID"  # the script runs as `sh -c` under the session's `sh`
OUTPUT_FILE = "readlink /proc/$$/fd/1"  # the script's stdout is a file in the session's directory


@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    """The session's server; the state files a test wrote are removed after it (later tests list them)."""
    yield sshd
    sshd.run(f"rm -rf {REMOTE_STATE}")


@pytest.fixture
def host(ssh_config: Path, server: SSHServer) -> Iterator[SSHHost]:
    kept = SSHHost.connect(ALIAS)
    try:
        kept.keep_shells()
        yield kept
    finally:
        kept.close()


def wait_until(condition: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


def test_scripts_share_one_session(host: SSHHost) -> None:
    first = host.run_script(SESSION_PID, []).stdout
    assert first.strip().isdigit()
    assert host.run_script(SESSION_PID, []).stdout == first  # kept, not a new channel per script


def in_shell(host: SSHHost, script: str, args: list[str]) -> tuple[int, bytes, bytes] | None:
    """The raw bytes a kept session gives (SSHHost.run_script decodes them)."""
    assert host.shells is not None
    return host.shells.run(script, args, b"", 30, 30)


def test_output_is_exact_bytes_with_exit_codes(host: SSHHost) -> None:
    every_byte = bytes(range(256))
    assert in_shell(host, "printf \"$1\"; printf 'x\\000y' >&2; exit 7", ["\\000\\377\\n\\n"]) == \
        (7, b"\0\xff\n\n", b"x\0y")
    assert in_shell(host, "cat", []) == (0, b"", b"")  # empty stdin is an empty here-document, not the session's
    big = every_byte * 2000  # past the channel window: the reader must keep draining
    host.write_atomic(f"{host.state_dir}/blob", big)
    assert in_shell(host, 'cat "$1"; exit 255', [f"{host.state_dir}/blob"]) == (255, big, b"")
    # The output marker and a login shell's noise mean nothing inside a script's output.
    noise = host.run_script('printf "%s\\n" "$@"', ["--remote-http-launcher-output--", "printf x"])
    assert noise.stdout == "--remote-http-launcher-output--\nprintf x\n"


def test_stdin_reaches_the_script_unexpanded(host: SSHHost) -> None:
    record = b'{"a": "$HOME `id` $(id) \\\\"}\nsecond line\n'
    result = host.run_script("cat; echo done", [], record)
    assert result.stdout == record.decode() + "done\n"
    # Not a here-document's shape (no final newline, binary): an exec channel takes it, exactly.
    for data in (b"no newline", b"\0\xff\n"):
        session = host.run_script(SESSION_PID, []).stdout
        assert host.run_script("cat; echo $PPID >&2", [], data).stdout == data.decode(errors="replace")
        assert host.run_script(SESSION_PID, []).stdout == session  # the kept session is still in use


def test_reads_keep_the_state_file_cap(host: SSHHost) -> None:
    path = f"{host.state_dir}/big.json"
    big = b"x" * (statefiles.READ_LIMIT + 1000)
    host.write_atomic(path, big)
    assert host.read(path) == big[:statefiles.READ_LIMIT]
    host.write_atomic(path, b"\0\xff{}\n")
    assert host.read(path) == b"\0\xff{}\n"
    assert host.read(f"{host.state_dir}/missing.json") is None
    assert host.read_state_file("missing.json") is None


def test_threads_share_a_bounded_pool(host: SSHHost) -> None:
    assert host.shells is not None
    results: dict[int, list[str]] = {}
    sessions: set[str] = set()

    def work(number: int) -> None:
        got = []
        for round_ in range(5):
            result = host.run_script('printf "%s-%s " "$1" "$2"; echo $PPID >&2', [str(number), str(round_)])
            got.append(result.stdout)
            sessions.add(result.stderr.strip())
        results[number] = got

    threads = [threading.Thread(target=work, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [f"{n}-{r} " for r in range(5)] for n in range(10)}
    assert len(host.shells.idle) <= MAX_SHELLS and host.shells.busy == 0


def test_a_killed_session_falls_back(host: SSHHost, server: SSHServer) -> None:
    session = host.run_script(SESSION_PID, []).stdout.strip()
    server.run(f"kill -9 {session}")
    assert wait_until(lambda: server.run(f"kill -0 {session}").returncode != 0)
    assert host.run_script("echo fine; exit 4", []) == (4, "fine\n", "")  # a new session or an exec channel
    # A session that dies while its script runs: the script's status is unknown (-1), as an exec channel's.
    died = host.run_script("kill -9 $PPID; sleep 1; echo late", [])
    assert died.returncode == -1 and "late" not in died.stdout
    assert host.run_script("echo again", []).stdout == "again\n"
    assert host.process_start_time(int(session)) is None


def test_session_directory_is_private_and_removed(host: SSHHost, server: SSHServer) -> None:
    directory = str(Path(host.run_script(OUTPUT_FILE, []).stdout.strip()).parent)
    assert server.run(f"stat -c %a {directory}").stdout.strip() == "700"
    assert host.shells is not None
    host.shells.close()
    assert wait_until(lambda: server.run(f"test -e {directory}").returncode != 0)
    assert host.run_script("echo after", []).stdout == "after\n"  # a closed pool: exec channels


# ---------------------------------------------------------------- a status file and its PID's start time at once

@pytest.fixture(params=["local", "ssh-kept-shells"])
def any_host(request: pytest.FixtureRequest, rhl_dir: Path) -> Host:
    """Both hosts implement Host.read_status_file with the PID check (SSH: one script in a kept session)."""
    if request.param == "local":
        return LocalHost()
    return request.getfixturevalue("host")  # type: ignore[no-any-return]


def sleeper(any_host: Host, server: SSHServer | None) -> int:
    """A process of ours on the host (sleep 60), detached."""
    command = "setsid sleep 60 >/dev/null 2>&1 </dev/null & echo $!"
    if isinstance(any_host, LocalHost):
        return int(subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout)
    assert server is not None
    return int(server.run(command).stdout)


def test_status_file_comes_with_its_pid_start_time(any_host: Host, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("server") if not isinstance(any_host, LocalHost) else None
    pid = sleeper(any_host, server)
    path = f"{any_host.state_dir}/k.json"
    assert any_host.read_status_file("k.json") == (None, None)
    record = b'{"status": "running", "pid": %d, "port": 1, "meta": {"pid": 1}}' % pid
    any_host.write_atomic(path, record)
    raw, seen = any_host.read_status_file("k.json")
    assert raw == record
    assert seen == SeenProcess(pid, any_host.process_start_time(pid)) and seen.start_time is not None
    any_host.write_atomic(path, b'{"status": "starting"}')
    assert any_host.read_status_file("k.json") == (b'{"status": "starting"}', None)
    if server is not None:
        server.run(f"kill -9 {pid}")
    else:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: any_host.process_start_time(pid) is None)
    any_host.write_atomic(path, record)
    assert any_host.read_status_file("k.json") == (record, SeenProcess(pid, None))


def test_a_status_file_naming_another_users_process_comes_with_no_start_time(host: SSHHost) -> None:
    """PID 1 is root's: not ours to signal, so no identity, as process_start_time says; a "pid" that is a
    value, not the key, is passed over."""
    path = f"{host.state_dir}/k.json"
    record = b'{"status": "running", "kind": "pid", "pid": 1, "port": 1}\n'
    host.write_atomic(path, record)
    assert host.read_status_file("k.json") == (record, SeenProcess(1, None))
    assert host.process_start_time(1) is None


def test_identity_uses_what_was_seen_only_for_its_pid(rhl_dir: Path) -> None:
    host = LocalHost()
    pid = sleeper(host, None)
    started = host.process_start_time(pid)
    state = ServerState.parse({"status": "running", "pid": pid, "port": 1, "start_time": started})
    assert state is not None
    assert identity_problem(host, state, None, SeenProcess(pid, started)) is None
    # What was seen with the file stands for the PID at that moment: no second look-up.
    assert identity_problem(host, state, None, SeenProcess(pid, None)) == f"process {pid} is gone"
    # Another PID's (a crude match on the host): looked up again.
    assert identity_problem(host, state, None, SeenProcess(pid + 1, None)) is None
    os.kill(pid, signal.SIGKILL)


def test_a_killed_sessions_directory_is_swept_by_a_later_one(host: SSHHost, server: SSHServer,
                                                             ssh_config: Path) -> None:
    """SIGKILL (as a link that froze may end a session) runs no trap: the next session of ours removes the
    directory, and only once its `sh` is gone."""
    session = host.run_script(SESSION_PID, []).stdout.strip()
    directory = str(Path(host.run_script(OUTPUT_FILE, []).stdout.strip()).parent)
    server.run(f"kill -9 {session}")
    assert wait_until(lambda: server.run(f"kill -0 {session}").returncode != 0)
    assert server.run(f"test -d {directory}").returncode == 0  # no trap ran
    later = SSHHost.connect(ALIAS)
    try:
        later.keep_shells()
        alive = str(Path(later.run_script(OUTPUT_FILE, []).stdout.strip()).parent)
        assert server.run(f"test -e {directory}").returncode != 0
        other = SSHHost.connect(ALIAS)
        try:
            other.keep_shells()
            assert other.run_script("echo fine", []).stdout == "fine\n"
        finally:
            other.close()
        assert server.run(f"test -d {alive}").returncode == 0  # a live session's directory is kept
    finally:
        later.close()
