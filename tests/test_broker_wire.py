"""The connection broker's wire: who may answer, what crosses it, the key proof and the size limit.

Impostors are real processes on a real socket (one of another local user, made for the test), against the
real CLI and a real broker on the test sshd; what they send would run `touch` if it were ever unpickled.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, Listener, Pipe
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import yaml
from pytest_mock import MockerFixture

from remote_http_launcher import processes
from remote_http_launcher.broker import protocol
from remote_http_launcher.broker.client import BrokeredHost, Relayed, connect
from remote_http_launcher.broker.registry import BrokerFiles, live_brokers
from remote_http_launcher.connect import open_ssh
from remote_http_launcher.errors import BrokerUnavailable
from remote_http_launcher.hosts.base import Host, ScriptResult, SeenProcess
from remote_http_launcher.processes import process_identity
from remote_http_launcher.tunnels.lock import BROKER_MARKER as MARKER
from tests.conftest import alive, cli
from tests.remote import RemoteConfig
from tests.ssh_client import ALIAS
from tests.test_broker import listening_at
from tests.test_windows import FakeKernel32

if TYPE_CHECKING:
    from tests.sshd import SSHServer

# An impostor broker: it accepts clients and answers each with a pickle that runs `touch PWNED` when loaded.
# argv: address, key file, PWNED path, how it proves the key, then MARKER (so its command line looks like a
# broker's). "multiprocessing": the standard library's challenge (what brokers spoke before); "ours": the
# broker's own key proof; "silent": accepts and never says anything.
IMPOSTOR = r"""
import os, pickle, sys, threading
from multiprocessing.connection import Listener

address, key_file, pwned, proof = sys.argv[1:5]
key = open(key_file, "rb").read()

class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + pwned,))

def serve(conn):
    try:
        if proof == "ours":
            from remote_http_launcher.broker.protocol import Wire, prove_server
            prove_server(Wire(conn), key)
        elif proof == "silent":
            threading.Event().wait()
        conn.recv_bytes(1 << 20)
        conn.send_bytes(pickle.dumps(Payload()))
        conn.recv_bytes(1 << 20)
    except Exception:
        pass

listener = Listener(address, authkey=key if proof == "multiprocessing" else None)
os.chmod(address, 0o777)
print("ready", flush=True)
while True:
    try:
        conn = listener.accept()
    except Exception:
        continue
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
READY_WAIT = 20.0
FALLBACK_WITHIN = 30.0  # seconds: a silent impostor costs the client HANDSHAKE_TIMEOUT, then a login
SIZE_HEADER = struct.Struct("!i")
HUGE = 512 << 20


class User(NamedTuple):
    name: str
    uid: int
    gid: int


@pytest.fixture
def other_user() -> Iterator[User]:
    """A throwaway local user (not the one running the tests)."""
    import pwd

    name = f"rhlimp{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-M", "-l", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    try:
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["pkill", "-KILL", "-U", str(entry.pw_uid)], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)


def start_impostor(python: str, address: Path, key_file: Path, pwned: Path, proof: str,
                   user: User | None = None) -> subprocess.Popen[str]:
    argv = [python, "-c", IMPOSTOR, str(address), str(key_file), str(pwned), proof, MARKER]
    if user is not None:
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--", *argv]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready = threading.Timer(READY_WAIT, proc.kill)
    ready.start()
    line = proc.stdout.readline()
    ready.cancel()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
    return proc


def point_lock_at(files: BrokerFiles, address: Path, pid: int | None = None) -> None:
    """Rewrite the broker lock as a compromised state directory would let someone: another address, and
    (with `pid`) another process."""
    record = json.loads(Path(files.lock).read_text())
    record["address"] = str(address)
    if pid is not None:
        record.update(pid=pid, started=process_identity(pid))
    Path(files.lock).write_text(json.dumps(record) + "\n")


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def status_goes_on(config: Path, pwned: Path) -> str:
    """`status` works (logged in directly if need be), nothing it received ran; its debug log."""
    began = time.monotonic()
    result = cli("status", config, "--log-level", "debug", timeout=FALLBACK_WITHIN * 2)
    assert not pwned.exists(), "the client loaded a pickle"
    assert result.returncode == 0, result.stderr
    assert "running" in result.stdout
    assert time.monotonic() - began < FALLBACK_WITHIN
    return result.stderr


@pytest.fixture
def pwned() -> Iterator[Path]:
    path = Path(tempfile.gettempdir()) / f"PWNED-{secrets.token_hex(8)}"
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("names", ["the broker", "the impostor"])
def test_a_broker_socket_of_another_user_is_refused(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                    rhl_dir: Path, tmp_path: Path, other_user: User, pwned: Path,
                                                    names: str) -> None:
    """Another user who got the key and can rewrite the lock (a compromised state directory) serves its own
    socket: the client refuses it before sending anything, then logs in directly (or starts a broker)."""
    config = write_config(tmp_path, remote_config(keyed_server))
    result = cli(config)
    assert result.returncode == 0, result.stderr
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    den = Path(tempfile.mkdtemp(prefix="rhl-impostor-"))
    try:
        os.chown(den, other_user.uid, other_user.gid)
        stolen = den / "key"
        stolen.write_bytes(Path(files.key).read_bytes())
        os.chown(stolen, other_user.uid, other_user.gid)
        address = den / "sock"
        impostor = start_impostor(keyed_server.python, address, stolen, pwned, "multiprocessing", other_user)
        try:
            point_lock_at(files, address, impostor.pid if names == "the impostor" else None)
            log = status_goes_on(config, pwned)
            if names == "the broker":  # its socket's other end is not it: refused there
                refusals = [line for line in log.splitlines() if f"{address} is served by process" in line]
                assert len(refusals) == 1, log
            else:  # a lock naming another user's process is stale: dropped unused, and a broker started
                assert str(address) not in log
                assert [o.pid for _f, o in live_brokers(rhl_dir / "brokers")] not in ([], [impostor.pid])
        finally:
            impostor.kill()
            impostor.wait()
    finally:
        subprocess.run(["rm", "-rf", str(den)], check=False)
        if alive(owner.pid):
            os.kill(owner.pid, 9)


@pytest.mark.parametrize("proof", ["multiprocessing", "ours", "silent"])
def test_an_impostor_of_the_same_user_runs_nothing(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                   rhl_dir: Path, tmp_path: Path, pwned: Path, proof: str) -> None:
    """A process of our own user that knows the key answers as the broker: its pickles are never loaded
    (nothing on the wire is), one that speaks another protocol or nothing at all is given up within
    seconds, and the command goes on with a login of its own."""
    config = write_config(tmp_path, remote_config(keyed_server, connection_persist=0))
    assert cli(config).returncode == 0
    files = BrokerFiles.for_target(ALIAS)
    Path(files.lock).parent.mkdir(mode=0o700, parents=True)
    Path(files.key).write_bytes(os.urandom(32))
    Path(files.key).chmod(0o600)
    impostor = start_impostor(sys.executable, Path(listening_at(files)), Path(files.key), pwned, proof)
    try:
        Path(files.lock).write_text(json.dumps({"owner": socket.gethostname(), "pid": impostor.pid,
                                          "started": process_identity(impostor.pid), "time": time.time(),
                                          "token": "t", "target": ALIAS, "address": listening_at(files)}) + "\n")
        config.write_text(yaml.safe_dump(remote_config(keyed_server)))  # with a broker: it finds the impostor
        status_goes_on(config, pwned)
    finally:
        impostor.kill()
        impostor.wait()


CURRENT_PROCESS = -1  # GetCurrentProcess's pseudo-handle
LOCK_PID = 4242


class PipeKernel32(FakeKernel32):
    """kernel32 with a named pipe served by process `server`; a process handle is its PID here."""

    def __init__(self, server: int) -> None:
        super().__init__()
        self.server = server

    def GetNamedPipeServerProcessId(self, handle: int, pid: Any) -> int:
        self.calls.append(("GetNamedPipeServerProcessId", (handle,)))
        pid._obj.value = self.server
        return 1

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", (access, inherit, pid)))
        return pid

    def GetCurrentProcess(self) -> int:
        return CURRENT_PROCESS


class AccountsAdvapi32:
    """advapi32 where each process handle's token names a user account (a SID: bytes in memory of ours);
    a process missing from `accounts` has a token we may not open (another user's, as Windows says)."""

    def __init__(self, accounts: dict[int, str]) -> None:
        self.accounts = accounts
        self.sids = {name: ctypes.create_string_buffer(name.encode().ljust(16, b"\0")) for name in accounts.values()}
        self.calls: list[str] = []

    def OpenProcessToken(self, process: int, access: int, token: Any) -> int:
        self.calls.append("OpenProcessToken")
        if process not in self.accounts or access != processes.TOKEN_QUERY:
            return 0
        token._obj.value = 1000 + process + 1  # a token handle of its own, never 0
        return 1

    def GetTokenInformation(self, token: Any, kind: int, buffer: Any, size: int | Any, needed: Any) -> int:
        self.calls.append("GetTokenInformation")
        assert kind == processes.TOKEN_USER
        needed._obj.value = 2 * ctypes.sizeof(ctypes.c_void_p)  # TOKEN_USER: the SID pointer, its attributes
        if buffer is None:
            return 0
        sid = self.sids[self.accounts[token.value - 1001]]
        ctypes.cast(buffer, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(sid)
        return 1

    def EqualSid(self, first: Any, second: Any) -> int:
        self.calls.append("EqualSid")
        return int(ctypes.string_at(first.value, 16) == ctypes.string_at(second.value, 16))


@pytest.mark.parametrize(("served_by", "account"), [(LOCK_PID, "me"), (LOCK_PID + 1, "me"), (LOCK_PID, "other"),
                                                    (LOCK_PID, None)],
                         ids=["the-broker", "another-process", "another-account", "unreadable-token"])
def test_on_windows_the_pipe_must_be_served_by_the_locks_broker_of_our_account(
        tmp_path: Path, mocker: MockerFixture, served_by: int, account: str | None) -> None:
    """Windows' branch (no UIDs there): the client sends nothing unless the process serving the pipe is the
    broker the lock names and runs as our account (its token's user SID equals ours). The seams: sys.platform,
    kernel32 and advapi32 (ctypes' windll); the pipe is a Unix socket here."""
    key = os.urandom(32)
    files = BrokerFiles.of("b", tmp_path)
    Path(files.key).write_bytes(key)
    Path(files.lock).write_text(json.dumps({"owner": socket.gethostname(), "pid": LOCK_PID, "started": "win:31:2718",
                                      "time": time.time(), "token": "t", "address": str(files.socket)}))
    accepted = served_by == LOCK_PID and account == "me"
    proven: list[bool] = []
    with Listener(str(files.socket)) as listener:
        def serve() -> None:
            wire = protocol.Wire(listener.accept())
            try:
                protocol.prove_server(wire, key, timeout=10)
                proven.append(True)
            except (BrokerUnavailable, OSError, EOFError):
                proven.append(False)
            finally:
                wire.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        mocker.patch.object(sys, "platform", "win32")
        fake = PipeKernel32(served_by)
        mocker.patch.object(processes, "kernel32", return_value=fake)
        accounts = {CURRENT_PROCESS: "me"} | ({served_by: account} if account else {})
        advapi = AccountsAdvapi32(accounts)
        mocker.patch.object(processes, "advapi32", return_value=advapi)
        if accepted:
            wire = connect(files)
            assert wire is not None
            wire.close()
        else:
            refusal = f"served by process {served_by}, not by the broker" if served_by != LOCK_PID else \
                f"served by process {served_by} of another user account"
            with pytest.raises(BrokerUnavailable, match=refusal):
                connect(files)
        thread.join(10)
    assert proven == [accepted]
    assert "GetNamedPipeServerProcessId" in fake.names()
    assert fake.names().count("CloseHandle") == fake.names().count("OpenProcess") + advapi.calls.count(
        "OpenProcessToken") - (account is None)


# ---------------------------------------------------------------- the key proof


def handshake_pair() -> tuple[protocol.Wire, protocol.Wire]:
    near, far = Pipe()
    return protocol.Wire(near), protocol.Wire(far)


def client_in_thread(key: bytes) -> tuple[protocol.Wire, threading.Thread, list[BaseException | None]]:
    """A real client's key proof on one end of a pipe, run in a thread; the other end and its outcome."""
    ours, theirs = handshake_pair()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            protocol.prove_client(theirs, key, timeout=10)
            outcome.append(None)
        except (BrokerUnavailable, OSError, EOFError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return ours, thread, outcome


def test_the_key_proof_cannot_be_relayed_between_clients() -> None:
    """An end that knows no key, in the broker's place for two clients, plays one against the other: it
    gives B what A answered (as the broker's nonce), and gives A what B answered, or A's own answer back.
    Neither makes A take it for the broker; the broker itself (knowing the key) passes."""
    key = os.urandom(32)
    for strategy in ("relay B's answer", "reflect A's answer"):
        to_a, a_thread, a_outcome = client_in_thread(key)
        to_b, b_thread, _ = client_in_thread(key)
        server_nonce = os.urandom(protocol.NONCE)
        to_a.conn.send_bytes(server_nonce)
        a_answer = to_a.conn.recv_bytes()
        client_nonce, a_proof = a_answer[:protocol.NONCE], a_answer[protocol.NONCE:]
        to_b.conn.send_bytes(client_nonce)  # B proves for A's nonce, with the broker's role if it could
        b_proof = to_b.conn.recv_bytes()[protocol.NONCE:]
        to_a.conn.send_bytes(b_proof if strategy == "relay B's answer" else a_proof)
        a_thread.join(10)
        assert len(a_outcome) == 1 and isinstance(a_outcome[0], BrokerUnavailable), strategy
        to_b.close()
        b_thread.join(10)
    to_a, a_thread, a_outcome = client_in_thread(key)
    protocol.prove_server(to_a, key, timeout=10)
    a_thread.join(10)
    assert a_outcome == [None]


def test_a_client_answer_is_not_a_broker_answer() -> None:
    """The two proofs differ in role: the broker refuses a client that answers with a broker's proof."""
    key = os.urandom(32)
    to_server, server_side = handshake_pair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            protocol.prove_server(server_side, key, timeout=10)
        except BrokerUnavailable as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server_nonce = to_server.conn.recv_bytes()
    client_nonce = os.urandom(protocol.NONCE)
    forged = protocol.proof(key, protocol.SERVER_ROLE, server_nonce, client_nonce)
    to_server.conn.send_bytes(client_nonce + forged)
    thread.join(10)
    assert len(errors) == 1


# ---------------------------------------------------------------- the size limit


def frame(data: bytes) -> bytes:
    return SIZE_HEADER.pack(len(data)) + data


def read_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    (size,) = SIZE_HEADER.unpack(exactly(SIZE_HEADER.size))
    return exactly(size)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("when", ["before the key proof", "after it"])
def test_a_huge_message_is_refused_unread(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                          tmp_path: Path, when: str) -> None:
    """A message announcing 512 MiB: the broker closes the session at once, without waiting for (or
    keeping) its body, and goes on serving."""
    config = write_config(tmp_path, remote_config(keyed_server))
    assert cli(config).returncode == 0
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    before = rss_kib(owner.pid)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(listening_at(files))
        server_nonce = read_frame(sock)
        if when == "after it":
            key = Path(files.key).read_bytes()
            client_nonce = os.urandom(protocol.NONCE)
            sock.sendall(frame(client_nonce + protocol.proof(key, protocol.CLIENT_ROLE, server_nonce, client_nonce)))
            assert read_frame(sock) == protocol.proof(key, protocol.SERVER_ROLE, client_nonce, server_nonce)
        sock.sendall(SIZE_HEADER.pack(HUGE) + b"[" * 65536)
        assert closed_by_peer(sock, 10)
    assert rss_kib(owner.pid) - before < 64 << 10
    result = cli("status", config)
    assert result.returncode == 0 and "running" in result.stdout
    assert [o.pid for _f, o in live_brokers(rhl_dir / "brokers")] == [owner.pid]


# ---------------------------------------------------------------- requests and replies


def test_a_reply_over_the_limit_is_made_by_a_login_of_our_own(keyed_server: SSHServer, rhl_dir: Path) -> None:
    """A log longer than one message holds: the broker says it cannot send it, and the client reads it
    itself (logged in directly); what it reads is the whole file."""
    size = protocol.MAX_MESSAGE + (1 << 20)
    assert keyed_server.run(f"head -c {size} /dev/zero > big.log").returncode == 0
    host = open_ssh(ALIAS, 60)
    try:
        assert isinstance(host, BrokeredHost)
        assert host.read_from(f"{host.home}/big.log", -10) == (bytes(10), size)
        assert host.fallback is None
        assert host.read_from(f"{host.home}/big.log", 0) == (bytes(size), size)
        assert host.fallback is not None
    finally:
        host.close()
        keyed_server.run("rm -f big.log")



def test_the_relayed_methods_are_the_host_interface() -> None:
    """One table (protocol.RELAYED): every abstract Host method is relayed or named as not relayed (with
    why), the concrete ones relayed are those the SSH host does its own way, and BrokeredHost relays
    exactly the table."""
    from remote_http_launcher.hosts.ssh import SSHHost

    relayed, local = set(protocol.RELAYED), set(protocol.NOT_RELAYED)
    assert Host.__abstractmethods__ <= relayed | local
    assert not relayed & local
    for name in relayed - Host.__abstractmethods__:
        assert vars(SSHHost).get(name) is not None, f"{name}: the Host default would do through the broker"
    assert {name for name, value in vars(BrokeredHost).items() if isinstance(value, Relayed)} == relayed
    assert not BrokeredHost.__abstractmethods__
    assert {"home", "state_dir"} == protocol.PROPERTIES


def test_values_cross_as_data() -> None:
    """What the Host interface passes round-trips; anything else is refused on the way out and the way in."""
    value = ["ok", {"data": b"\x00\xff", "result": ScriptResult(0, "out", "err"), "seen": SeenProcess(4, None),
                    "pair": (b"", 3), "nested": [1.5, None, True, {"k": (False, b"x")}]}]
    assert protocol.decode(json.loads(json.dumps(protocol.encode(value)))) == value
    decoded = protocol.decode(protocol.encode(value))
    assert type(decoded[1]["result"]) is ScriptResult and type(decoded[1]["seen"]) is SeenProcess
    with pytest.raises(TypeError):
        protocol.encode(object())
    with pytest.raises(TypeError):
        protocol.encode({1: "not a str key"})
    for size in range(70):  # bytes as base64: every length of the last quad
        data = os.urandom(size)
        assert protocol.decode(json.loads(json.dumps(protocol.encode(data)))) == data
    for bad in ({"a": 1, "b": 2}, {"n": ["Popen", []]}, {"b": "not base64!"}, {"b": "YQ= "}, {"b": "YQ"},
                {"b": "Y=Q="}, {"b": "="}, {"b": "YQ==\n"}, {"b": "é"}, {"x": 1}):
        with pytest.raises(ValueError):
            protocol.decode(bad)
    with pytest.raises(BrokerUnavailable):
        protocol.parse_reply(["ok"])
    with pytest.raises(BrokerUnavailable):
        protocol.parse_reply(["exec", "x"])


# ---------------------------------------------------------------- the client's socket framing


def test_the_clients_socket_speaks_the_brokers_framing() -> None:
    """A command's `SocketEndpoint` and the broker's `multiprocessing.connection` connection read each other's
    messages, whatever their size (multiprocessing sends a short one with its header in one write, a long
    one in two); one over the reader's limit is refused unread, and the end of the stream is EOFError."""
    near, far = socket.socketpair(socket.AF_UNIX)
    ours, theirs = protocol.SocketEndpoint(near), Connection(far.detach())
    try:
        assert not ours.poll(0) and not ours.poll(0.01)
        assert ours.sock.gettimeout() is None  # a poll leaves the socket blocking
        for size in (0, 1, 16383, 16384, 100_000, 3 << 20):
            payload = os.urandom(size)
            sender = threading.Thread(target=ours.send_bytes, args=(payload,))
            sender.start()
            assert theirs.recv_bytes() == payload
            sender.join()
            sender = threading.Thread(target=theirs.send_bytes, args=(payload,))
            sender.start()
            assert ours.poll(5) and ours.recv_bytes(size) == payload
            sender.join()
        theirs.send_bytes(b"x" * 100)
        with pytest.raises(OSError, match="bad message length"):
            ours.recv_bytes(99)
        assert ours.sock.fileno() == -1  # closed, as multiprocessing closes it
    finally:
        ours.close()
        theirs.close()
    near, far = socket.socketpair(socket.AF_UNIX)
    ours = protocol.SocketEndpoint(near)
    far.sendall(struct.pack("!i", 10) + b"short")  # a message cut off by its sender's end
    far.close()
    with pytest.raises(OSError, match="end of file"):
        ours.recv_bytes()
    ours.close()
    near, far = socket.socketpair(socket.AF_UNIX)
    ours = protocol.SocketEndpoint(near)
    far.close()
    assert ours.poll(1)
    with pytest.raises(EOFError):
        ours.recv_bytes()
    ours.close()


def test_a_key_file_the_broker_did_not_write_is_not_used(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                         rhl_dir: Path, tmp_path: Path) -> None:
    """A key of another length than the broker writes (rewritten by hand, or by another version): the
    command says why in its debug log and logs in itself; no traceback."""
    config = write_config(tmp_path, remote_config(keyed_server))
    assert cli(config).returncode == 0
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    Path(files.key).write_bytes(os.urandom(protocol.KEY_BYTES * 3))
    result = cli("status", config, "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert f"its key file {files.key} is not one it wrote" in result.stderr and "Traceback" not in result.stderr
    os.kill(owner.pid, 9)
