"""Security properties, locally and over a real sshd (tests/sshd.py).

* Config values never reach a shell as code: markers that injected commands
  would create are looked for on this machine and on the server.
* Passwords typed at the prompt appear in no output, log or state file.
* State files are 0600 in 0700 directories, on both sides, also after the
  service rewrote its status file.
* The default host-key policy never accepts an unknown key silently.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import ConfigError, HandshakeError, HostKeyError, LaunchError, run, status, stop
from remote_http_launcher.config import evaluate_key, load_config
from remote_http_launcher.hosts import LocalHost
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.launcher import LaunchLock
from remote_http_launcher.render import format_status
from remote_http_launcher.service import Service
from tests import test_faults_ssh as faults
from tests.conftest import ROOT, cli
from tests.posix import TAKE_TERMINAL_AND_RUN, pty, python_path
from tests.ssh_client import ALIAS, REMOTE_STATE, remote_state
from tests.test_faults_ssh import healthy, remote_files, remote_record, wait_for

if TYPE_CHECKING:
    from tests.sshd import SSHServer

Factory = Callable[..., dict[str, Any]]
MODES = ["local", "ssh"]

# The SSH fixtures of the fault tests: the server (cleaned around each test) and configs; the client
# HOME, ~/.ssh/config and the demo service on the server come from tests/conftest.py.
server = faults.server
make_config = faults.make_config


def file_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def remote_modes(server: SSHServer, *paths: str) -> list[str]:
    """Octal modes of paths relative to the test user's home, as `stat` prints them."""
    result = server.run("stat -c %a -- " + " ".join(shlex.quote(p) for p in paths), check=True)
    return result.stdout.split()


# ---------------------------------------------------------------- shell injection

class Markers:
    """Files an injected `touch` would create: here, on the server, and relative to any working directory."""

    RELATIVE = "rhl-pwned-relative"

    def __init__(self, tmp_path: Path, server: SSHServer | None) -> None:
        self.local = tmp_path / "rhl-pwned-local"
        self.remote = f"{server.home}/rhl-pwned-remote" if server else None
        self.server = server
        self.tmp_path = tmp_path

    def payloads(self, *, newlines: bool) -> list[str]:
        values = []
        for target in filter(None, [str(self.local), self.remote, self.RELATIVE]):
            values += [f"$(touch {target})", f"`touch {target}`", f";touch {target}", f"';touch {target};'",
                       f'";touch {target};"', f"|touch {target}", f"&& touch {target}", f"${{IFS}}touch {target}"]
            if newlines:
                values.append(f"\ntouch {target}\n")
        return [*values, "%s%n\\n", "$HOME", "'", '"', "\\"]

    def assert_none(self) -> None:
        """No marker file anywhere (directories of those names are fine: workdir path segments)."""
        assert not self.local.is_file()
        found = [str(p) for p in self.tmp_path.rglob(self.RELATIVE) if p.is_file()]
        found += [str(p) for p in (Path.cwd() / self.RELATIVE, Path.home() / self.RELATIVE) if p.exists()]
        if self.server is not None:
            found += self.server.run(f"find ~ -type f \\( -name {self.RELATIVE} -o -name rhl-pwned-remote \\)"
                                     ).stdout.splitlines()
        assert found == []


@pytest.fixture
def configs(request: pytest.FixtureRequest, tmp_path: Path, rhl_dir: Path) -> tuple[Factory, SSHServer | None]:
    """(config factory, server or None) for the `mode` parameter: the local demo, or the demo over SSH."""
    if request.param == "local":
        return request.getfixturevalue("demo_config"), None
    request.getfixturevalue("ssh_config")
    return request.getfixturevalue("make_config"), request.getfixturevalue("server")


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_config_values_are_never_shell_code(configs: tuple[Factory, SSHServer | None], tmp_path: Path,
                                            rhl_dir: Path) -> None:
    """workdir, file_parameters (names and values) and unused extra fields travel as data only."""
    factory, server = configs
    markers = Markers(tmp_path, server)
    values = markers.payloads(newlines=False)
    workdir_base = f"{server.home}/rhl-work" if server else str(tmp_path / "rhl-work")
    workdir = f"{workdir_base}/{'/'.join(values)}"  # one value per path segment: names are <= 255 bytes
    with_newlines = markers.payloads(newlines=True)
    parameters = {f"p{i}": value for i, value in enumerate(with_newlines)}
    parameters.update(dict.fromkeys(with_newlines, "as a name"))
    extras = {f"extra{i}": value for i, value in enumerate(with_newlines)}

    config = factory(workdir=workdir, file_parameters=parameters, **extras)
    payload = run(config)

    markers.assert_none()
    key = evaluate_key(load_config(config))
    if server:
        record = remote_record(server, key)
        cwd = server.run(f"readlink /proc/{record['pid']}/cwd").stdout.rstrip("\n")
        assert healthy(server.host, payload["port"])
    else:
        record = json.loads((rhl_dir / "server" / f"{key}.json").read_text())
        cwd = os.readlink(f"/proc/{record['pid']}/cwd")
    assert record["parameters"] == parameters and payload["parameters"] == parameters
    assert record["workdir"] == workdir == cwd


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_each_hostile_value_alone_is_inert(configs: tuple[Factory, SSHServer | None], tmp_path: Path,
                                          rhl_dir: Path) -> None:
    """One launch per value (so no other value's quote can hide an injection) in workdir, parameters, extras.

    The command prints its working directory and exits, so the error's log
    tail shows where LAUNCH really went.
    """
    from concurrent.futures import ThreadPoolExecutor

    factory, server = configs
    markers = Markers(tmp_path, server)
    base = f"{server.home}/rhl-work" if server else str(tmp_path / "rhl-work")
    values = markers.payloads(newlines=True)

    def launch(index: int) -> tuple[dict[str, Any], str, BaseException | None]:
        value = values[index]
        workdir = f"{base}/{index}/{value}" if "\n" not in value else f"{base}/{index}"
        config = factory(key=f"inj-{index}", workdir=workdir, command="pwd; exit 3",
                         file_parameters={"value": value, value: "name"}, hostile=value)
        try:
            run(config)
        except LaunchError as exc:
            return config, workdir, exc
        return config, workdir, None

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(launch, range(len(values))))
    markers.assert_none()
    for config, workdir, exc in outcomes:
        assert exc is not None and str(exc).endswith(f"exited before reporting its port; log: {workdir}"), exc
        if server:
            record = remote_record(server, config["key"])
        else:
            record = json.loads((rhl_dir / "server" / f"{config['key']}.json").read_text())
        assert record["parameters"] == config["file_parameters"] and record["workdir"] == workdir


@pytest.mark.parametrize("configs", MODES, indirect=True)
@pytest.mark.parametrize("field", ["key-from-field", "conda", "hostname", "ssh_hostname", "network_interface"])
def test_values_that_would_reach_a_shell_unquoted_are_refused(field: str, configs: tuple[Factory, SSHServer | None],
                                                              tmp_path: Path, rhl_dir: Path) -> None:
    """A key evaluated from fields, conda and host names must be plain: refused before anything happens."""
    factory, server = configs
    markers = Markers(tmp_path, server)
    logins = server.log_text().count("Accepted publickey") if server else 0
    for value in markers.payloads(newlines=True)[::3]:
        config = factory()
        if field == "key-from-field":
            config.update(key="svc-{flavour}", flavour=value)
        elif field == "hostname" and server is None:
            config.update(hostname=value)
        elif field == "ssh_hostname" and server is None:
            config.update(hostname="example.org", ssh_hostname=value)
        else:
            config[field] = value
        with pytest.raises(ConfigError) as caught:
            run(config)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{field.split('-', maxsplit=1)[0]}:"), message
    markers.assert_none()
    assert not rhl_dir.exists()  # nothing written on this side
    if server:
        assert server.log_text().count("Accepted publickey") == logins  # no connection was even made
        assert remote_files(server) == []


# ---------------------------------------------------------------- secrets

# TAKE_TERMINAL_AND_RUN (tests/posix.py): the CLI with the pty on stdin as its controlling terminal.


class Terminal:
    """The CLI on a fresh pty that is its controlling terminal (so getpass asks there); stdout is a pipe."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", TAKE_TERMINAL_AND_RUN, *args], stdin=slave,
                                     stdout=subprocess.PIPE, stderr=slave, start_new_session=True, env=env)
        os.close(slave)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: nobody holds the terminal any more
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def screen(self) -> bytes:
        return b"".join(self.chunks)

    def answer(self, prompt: bytes, text: str, count: int = 1) -> None:
        wait_for(lambda: self.screen.count(prompt) >= count, 30, f"prompt {prompt!r} #{count}")
        os.write(self.master, text.encode() + b"\n")

    def finish(self) -> bytes:
        out, _ = self.proc.communicate(timeout=60)
        self.reader.join(10)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def files_containing(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_password_never_logged_or_stored(server: SSHServer, client_home: Path, rhl_dir: Path,
                                         make_config: Factory, tmp_path: Path) -> None:
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none"})
    wrong = "wrong-" + server.password[::-1]
    config = make_config()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config))
    debug_log, phase_log = tmp_path / "debug.log", tmp_path / "phases.log"
    args = [str(config_path), "--json", "--log-level", "debug", "--debug-log-file", str(debug_log),
            "--log-file", str(phase_log), "--connection-persist", "0"]  # this process logs in: its debug log
    logins = server.log_text().count("Accepted password")
    terminal = Terminal(args, {**os.environ, "PYTHONPATH": python_path(ROOT)})
    try:
        prompt = f"{server.user}@{server.host}'s password: ".encode()
        terminal.answer(prompt, wrong)
        terminal.answer(prompt, server.password, count=2)
        out = terminal.finish()
    finally:
        terminal.close()
    assert terminal.proc.returncode == 0, terminal.screen
    assert server.log_text().count("Accepted password") == logins + 1
    assert json.loads(out)["port"] == remote_record(server, config["key"])["port"]
    assert b"Permission denied, please try again." in terminal.screen
    assert b"DEBUG" in debug_log.read_bytes() and b"connecting client" in phase_log.read_bytes()
    assert b"auth" in debug_log.read_bytes().lower()  # paramiko's debug log was on

    for secret in (server.password, wrong):
        assert secret.encode() not in terminal.screen + out  # stderr on the terminal, and stdout
        assert files_containing(tmp_path, secret.encode()) == []  # logs, client files, known_hosts, ...
        remote = server.run(f"grep -rlF -- {shlex.quote(secret)} ~").stdout.split()
        assert remote == []  # status file, log, anything in the server user's home


# ---------------------------------------------------------------- secrets and the process list

# A conda whose activation takes a second: the service's own shell lives that long before it becomes the
# command, so a secret among its arguments could not be missed by the process list below.
SLOW_CONDA_SH = "conda() { sleep 1; }\n"


def command_lines_containing(secret: bytes, until: threading.Event) -> list[str]:
    """Poll every process's argv (/proc/PID/cmdline: what any user's `ps` shows) until `until` is set.
    Services on the test sshd share this machine's PID namespace, so both sides are seen."""
    found: set[str] = set()
    while not until.is_set():
        for path in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = path.read_bytes()
            except OSError:
                continue  # gone meanwhile
            if secret in argv:
                found.add(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
    return sorted(found)


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_file_parameters_never_appear_on_a_command_line(configs: tuple[Factory, SSHServer | None],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status record (with file_parameters) reaches the launch script and the service on stdin."""
    factory, server = configs
    secret = "s3cret-" + os.urandom(8).hex()
    setup = (f"mkdir -p miniforge3/etc/profile.d miniforge3/envs/slow/conda-meta && "
             f"printf %s {shlex.quote(SLOW_CONDA_SH)} > miniforge3/etc/profile.d/conda.sh")
    if server:
        server.run(setup, check=True)
    else:
        home = tmp_path / "home"
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))  # the local launch script looks for conda there
        subprocess.run(["sh", "-c", setup], cwd=home, check=True)
    config = factory(conda="slow", file_parameters={"token": secret})
    done = threading.Event()
    seen: list[str] = []
    poller = threading.Thread(target=lambda: seen.extend(command_lines_containing(secret.encode(), done)))
    poller.start()
    try:
        payload = run(config)
    finally:
        done.set()
        poller.join()
    assert seen == []
    assert payload["parameters"] == {"token": secret}
    key = evaluate_key(load_config(config))
    record = remote_record(server, key) if server else json.loads((tmp_path / "rhl-state" / "server" /
                                                                   f"{key}.json").read_text())
    assert record["parameters"] == {"token": secret} and record["status"] == "running"


# ---------------------------------------------------------------- oversized state files

OVERSIZED = 3 << 20  # past statefiles.MAX_STATE_BYTES (1 MiB); the was 50 MB


def oversized_record(pid: int) -> bytes:
    """A status file that would be trusted if read whole: running, a live PID of ours, no start time."""
    return json.dumps({"status": "running", "pid": pid, "port": 22, "padding": "x" * OVERSIZED}).encode()


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_an_oversized_status_file_is_corrupt_and_nothing_is_signalled(configs: tuple[Factory, SSHServer | None],
                                                                      tmp_path: Path, rhl_dir: Path) -> None:
    """Reads stop at the cap: `status` calls the file corrupt, `stop` signals nothing it names."""
    factory, server = configs
    config = factory()
    key = evaluate_key(load_config(config))
    sleeper = None
    if server:
        pid = int(server.run("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!", check=True).stdout)
        server.run(f"mkdir -p {REMOTE_STATE}", check=True)
        client = server.connect()
        try:
            with client.open_sftp().open(f"{REMOTE_STATE}/{key}.json", "w") as handle:
                handle.write(oversized_record(pid))
        finally:
            client.close()
    else:
        sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
        pid = sleeper.pid
        (rhl_dir / "server").mkdir(parents=True, mode=0o700)
        (rhl_dir / "server" / f"{key}.json").write_bytes(oversized_record(pid))
    try:
        result = status(config)
        assert (result["status"], result["pid"]) == ("stale", None)
        assert result["detail"] == ("the status file is larger than 1024 KiB, so it is not a status record; "
                                    "nothing it names is trusted or signalled")
        assert not stop(config)["stopped"]
        if server:
            assert server.run(f"kill -0 {pid}").returncode == 0  # not signalled
        else:
            assert sleeper is not None and sleeper.poll() is None
    finally:
        if server:
            server.run(f"kill {pid}")
        elif sleeper is not None:
            sleeper.kill()
            sleeper.wait()


def test_an_oversized_client_file_is_not_reused(rhl_dir: Path, tmp_path: Path, demo_config: Factory) -> None:
    """The warm path reads a client file up to the cap too: a bigger one is corrupt, so the run goes on to the
    service's host and writes a fresh file."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(demo_config()))
    assert cli(config_path).returncode == 0
    path = rhl_dir / "client" / "demo-localhost.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "padding": "x" * OVERSIZED}))
    result = cli(config_path, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert "padding" not in payload and json.loads(path.read_text()) == payload  # not reused: written afresh


# ---------------------------------------------------------------- whose port, without a handshake

@pytest.fixture
def foreign_port(configs: tuple[Factory, SSHServer | None]) -> Iterator[int]:
    """A port another process listens on where the service runs: the test sshd's own, or one of this test's."""
    server = configs[1]
    if server:
        yield server.port
        return
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_without_a_handshake_a_port_the_service_does_not_listen_on_is_refused(
        configs: tuple[Factory, SSHServer | None], foreign_port: int) -> None:
    """A TCP connection alone would accept sshd's port: the port's listener must be the service's."""
    factory, server = configs
    where = {"network_interface": server.host} if server else {}  # where sshd listens
    config = factory(handshake=None, args=f"--report-port {foreign_port}", **where)
    with pytest.raises(HandshakeError, match=rf"reported port {foreign_port} but port {foreign_port} on "
                                             rf"{ALIAS if server else 'localhost'} is not the service's"):
        run(config)
    assert status(config)["status"] in ("absent", "stale")  # what it launched was stopped


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_status_says_whose_port_it_is_without_a_handshake(configs: tuple[Factory, SSHServer | None],
                                                          foreign_port: int, tmp_path: Path, rhl_dir: Path) -> None:
    factory, server = configs
    config = factory(handshake=None)
    payload = run(config)
    result = status(config)
    assert (result["status"], result["port"], result["port_listener"]) == ("running", payload["port"], "verified")
    assert status(factory())["port_listener"] is None  # a handshake checks the port itself

    key = evaluate_key(load_config(config))
    if server:
        record = remote_record(server, key)
        faults.remote_write(server, f"{REMOTE_STATE}/{key}.json", json.dumps({**record, "port": foreign_port}).encode())
    else:
        path = rhl_dir / "server" / f"{key}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "port": foreign_port}))
    result = status(config)
    assert (result["status"], result["port"], result["port_listener"]) == ("running", foreign_port,
                                                                          "not the service's")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config))
    text = cli("status", config_path).stdout
    assert f"  port          {foreign_port} (not the service's: another process listens there)\n" in text
    assert "the service reported a port it does not listen on" in text


# A /bin/sh that sees no /proc, like the shell of a host that is not Linux (a mount namespace of its own).
SHELL_WITHOUT_PROC = """#!/bin/sh
exec unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs none /proc && shift && exec /bin/sh "$@"' \\
  sh - "$@"
"""


def test_a_host_that_cannot_show_listeners_leaves_the_port_unverified(
        demo_config: Factory, rhl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a host without /proc (not Linux), `status` says plainly that nothing checked the port."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a mount namespace without /proc)")
    shell = tmp_path / "sh-without-proc"
    shell.write_text(SHELL_WITHOUT_PROC)
    shell.chmod(0o755)
    config = demo_config(handshake=None)
    payload = run(config)
    monkeypatch.setattr("remote_http_launcher.hosts.local.SHELL", str(shell))
    assert LocalHost().run_script("test -e /proc/net/tcp || echo none", []).stdout == "none\n"
    result = status(config)
    assert (result["status"], result["port"], result["port_listener"]) == ("running", payload["port"], "unverified")
    assert (f"  port          {payload['port']} (unverified: no handshake, and localhost cannot show which "
            "process listens there)\n") in format_status(result)


# ---------------------------------------------------------------- file modes

def test_local_state_file_modes(rhl_dir: Path, demo_config: Factory) -> None:
    config = demo_config()
    (rhl_dir / "server").mkdir(parents=True)
    (rhl_dir / "server").chmod(0o755)  # as the original leaves it: made private by the launch
    run(config)
    key = evaluate_key(load_config(config))
    server_dir, client_dir = rhl_dir / "server", rhl_dir / "client"
    record = json.loads((server_dir / f"{key}.json").read_text())
    assert record["status"] == "running"  # so the service has rewritten the file by now
    assert [file_mode(p) for p in (server_dir, client_dir)] == [0o700, 0o700]
    assert [file_mode(server_dir / f"{key}.{ext}") for ext in ("json", "log")] == [0o600, 0o600]
    assert file_mode(client_dir / f"{key}.json") == 0o600
    lock = LaunchLock(Service(LocalHost(), load_config(config), key))
    assert lock.acquire()
    try:
        assert file_mode(Path(lock.path)) == 0o600
    finally:
        lock.release()
    assert sorted(p.name for p in server_dir.iterdir()) == [f"{key}.json", f"{key}.log"]


@pytest.mark.parametrize("configs", MODES, indirect=True)
def test_the_service_runs_with_the_callers_umask(configs: tuple[Factory, SSHServer | None], tmp_path: Path) -> None:
    """The launch shell works under umask 077 (its own files private); the service gets the umask of the shell
    that started it: the caller's here, the login's over SSH."""
    factory, server = configs
    config = factory(setup=["umask > service-umask.txt"], key="umask-{network_interface}")
    if server:
        run(config)
        record = remote_record(server, evaluate_key(load_config(config)))
        seen = server.run(f"cat {shlex.quote(record['workdir'])}/service-umask.txt", check=True).stdout
        expected = server.run("umask", check=True).stdout
    else:
        old_umask = os.umask(0o027)
        try:
            run(config)
        finally:
            os.umask(old_umask)
        seen, expected = (Path(config["workdir"]) / "service-umask.txt").read_text(), "0027\n"
    assert seen == expected and seen.strip() != "0077"


def test_remote_state_file_modes(ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Factory) -> None:
    server.run(f"mkdir -p {REMOTE_STATE} && chmod 755 .remote-http-launcher {REMOTE_STATE}", check=True)
    config = make_config()
    key = config["key"]
    run(config)
    assert remote_record(server, key)["status"] == "running"  # rewritten by the service
    status, log = f"{REMOTE_STATE}/{key}.json", f"{REMOTE_STATE}/{key}.log"
    assert remote_modes(server, REMOTE_STATE, status, log) == ["700", "600", "600"]
    assert file_mode(rhl_dir / "client") == 0o700 and file_mode(rhl_dir / "client" / f"{key}.json") == 0o600

    server.run(f"rm -rf .remote-http-launcher/server/{key}.lock .remote-http-launcher", check=True)
    with SSHHost.connect(ALIAS) as host:  # the lock, made as the launcher makes it, in a fresh tree
        lock = LaunchLock(Service(host, load_config(config), key))
        assert lock.acquire()
        try:
            assert remote_modes(server, ".remote-http-launcher", REMOTE_STATE, f"{REMOTE_STATE}/{key}.lock") \
                == ["700", "700", "600"]
        finally:
            lock.release()
    assert remote_files(server) == []


# ---------------------------------------------------------------- host keys

def default_policy_config(client_home: Path, server: SSHServer, known_hosts: str | None) -> Path:
    """~/.ssh/config for the server with no StrictHostKeyChecking line: the default policy."""
    ssh_dir = client_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text(f"Host {ALIAS}\n  HostName {server.host}\n  Port {server.port}\n"
                                    f"  User {server.user}\n  IdentityFile {server.client_key}\n"
                                    "  IdentitiesOnly yes\n")
    if known_hosts is not None:
        (ssh_dir / "known_hosts").write_text(known_hosts)
    return ssh_dir


@pytest.mark.parametrize("known", ["absent", "other-hosts"])
def test_unknown_host_key_is_refused_without_a_terminal(known: str, server: SSHServer, client_home: Path,
                                                        rhl_dir: Path, make_config: Factory,
                                                        tmp_path: Path) -> None:
    other = "other.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
    ssh_dir = default_policy_config(client_home, server, None if known == "absent" else other)
    before = {p.name: p.read_bytes() for p in ssh_dir.iterdir()}
    config = make_config()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(config_path)],
                            env={**os.environ, "PYTHONPATH": python_path(ROOT)}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert re.search(r"error: .*host key: unknown ED25519 key SHA256:\S+ for .* \(no terminal or prompt= to ask\)",
                     result.stderr), result.stderr
    with pytest.raises(HostKeyError, match=r"no terminal or prompt= to ask"):
        run(config)  # the API too: pytest's stdin is no terminal
    assert {p.name: p.read_bytes() for p in ssh_dir.iterdir()} == before
    assert remote_state(server, config["key"]) is None


def test_unknown_host_key_refused_on_a_terminal_leaves_known_hosts(server: SSHServer, client_home: Path,
                                                                   rhl_dir: Path, make_config: Factory,
                                                                   tmp_path: Path) -> None:
    ssh_dir = default_policy_config(client_home, server, "")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(make_config()))
    terminal = Terminal([str(config_path)], {**os.environ, "PYTHONPATH": python_path(ROOT)})
    try:
        terminal.answer(b"(yes/no/[fingerprint])? ", "no")
        terminal.finish()
    finally:
        terminal.close()
    assert terminal.proc.returncode == 1
    assert server.host_pubkey.fingerprint.encode() in terminal.screen
    assert re.search(rb"error: .*host key: ED25519 key \S+ for \S+ not accepted", terminal.screen), terminal.screen
    assert (ssh_dir / "known_hosts").read_text() == ""
    assert remote_state(server, "x") is None and remote_files(server) == []


def test_daemon_log_is_never_opened_through_a_symbolic_link(tmp_path: Path) -> None:
    """A keeper's or broker's log replaced by a link to another file: refused, the file left as it was; a
    broker's previous log moves aside as the link it is, and the new log is a private file of its own."""
    from remote_http_launcher.tunnels.daemon import open_log

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    log = tmp_path / "tunnel.log"
    log.symlink_to(victim)
    with pytest.raises(OSError):
        open_log(log)
    assert victim.read_text() == "keep me"
    import logging

    ours = logging.getLogger("remote_http_launcher")
    saved = (ours.handlers[:], ours.level, ours.propagate)
    try:
        os.close(open_log(log, keep_previous=True))
    finally:  # open_log sets the logger up for a daemon process: undo that here
        for handler in set(ours.handlers) - set(saved[0]):
            ours.removeHandler(handler)
            handler.close()
        ours.setLevel(saved[1])
        ours.propagate = saved[2]
    assert victim.read_text() == "keep me"
    assert not log.is_symlink() and log.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tunnel.log.1").is_symlink()
