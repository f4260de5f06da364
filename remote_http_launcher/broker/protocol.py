"""The broker's wire: who is at the other end, the key proof, and requests (Host calls by name) and replies.

Nothing that crosses the socket is executable: each message is one JSON
document in `multiprocessing.connection`'s framing (a length, then the
bytes), read with a limit, so one that announces more is refused before its
body is read. Bytes, tuples and the Host interface's named tuples are tagged
(every JSON object on the wire is a tag: `encode`).

Before any request both ends check the other: the client that the socket's
peer is the broker process of its own user that the lock names (broker/client.py),
the broker that its peer is a process of its own user; then the key proof,
bound to the roles so that an end knowing no key cannot pass one client's
answer to another as its own:
  broker → client   nonce_s
  client → broker   nonce_c, MAC(key, "client" nonce_s nonce_c)
  broker → client   MAC(key, "server" nonce_c nonce_s)
(MAC: keyed BLAKE2b, statefiles.keyed_digest; compared as MACs of them, statefiles.equal_digests.)

Requests: [method, [args], {keyword args}], where the methods are the relayed part of the
`Host` interface (`RELAYED`), `info`, `login`, `recall_status_file` (RECALL), the tunnel requests of broker/tunnels.py
(`tunnel_claim`, `tunnel_open`, `tunnel_keep`, `tunnel_drop`), and the
socket-like channel `tcp_channel` returns, driven call by call (`channel_send`,
`channel_recv`, `channel_close`) so the handshake code runs unchanged through the broker.

Replies: ["ok", value]; ["error", LauncherError.to_dict(), link_lost] where
`link_lost` tells the client to log in again and repeat the call; ["oserror",
class name, errno, text] for the OSErrors the Host interface raises on purpose
(e.g. a refused port); ["unavailable", why] when the broker cannot answer this
call (a reply over the size limit): the client makes it on a login of its own;
["login", why] while the broker's link waits for a login it cannot ask for (a
password, a one-time code): the client sends `login`, during which the broker
relays each question of its new login, [PROMPT, text, secret], and the client
answers [ANSWER, text] or [CANCEL, why]; its reply says whether the link was
restored with that login, and the client then repeats its call.
"""

from __future__ import annotations

import _socket
import binascii
import builtins
import os
import sys
import time

from .. import jsontext, statefiles
from ..errors import BrokerUnavailable, LauncherError
from ..hosts.base import Host, Launch, ScriptResult, SeenProcess
from ..records import NamedTuple

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    class Endpoint(Protocol):
        """What both ends use of a connection: `SocketEndpoint`, or `multiprocessing.connection`'s (the
        broker's Listener; a pipe on Windows)."""

        def send_bytes(self, buf: bytes) -> None: ...

        def recv_bytes(self, maxlength: int | None = None) -> bytes: ...

        def poll(self, timeout: float | None = 0.0) -> bool: ...

        def fileno(self) -> int: ...

        def close(self) -> None: ...

#: The Host interface as the broker relays it, each name with whether the call needs the broker's one SFTP
#: session to itself (its request flights must not interleave). Properties are read, methods called. Every
#: abstract method of Host is here or in NOT_RELAYED; the others here are those the SSH host does better
#: than the default built on the abstract ones (tests/test_broker_wire.py checks both).
RELAYED: dict[str, bool] = {
    "home": True, "state_dir": True, "read": True, "read_state_file": True, "read_status_file": True,
    "mtime": True, "write_atomic": True, "create_exclusive": True, "create_then_read": True, "rename": True,
    "remove": True, "listdir": True, "read_from": True, "process_start_time": True, "run_script": False,
    "listens": False, "listening_ports": False, "signal_group": False, "launch": False,
}
#: Host methods the client does not relay as they are, and why.
NOT_RELAYED = {
    "tcp_channel": "its socket-like channel stays in the broker; the client drives it by number (channel_*)",
}
#: The broker's own answer to Host.recall_status_file: what its last read of that status file returned, for
#: whichever client made it (session.StatusMemory).
RECALL = "recall_status_file"
PROPERTIES = frozenset(name for name in RELAYED if isinstance(getattr(Host, name), property))
OS_ERRORS = frozenset({"FileNotFoundError", "FileExistsError", "PermissionError", "ConnectionRefusedError",
                       "ConnectionResetError", "TimeoutError", "OSError", "EOFError"})
#: Each kind of reply and the types of its fields.
REPLY_FIELDS: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "ok": (object,), "error": (dict, bool), "oserror": (str, (int, type(None)), str), "unavailable": (str,),
    "login": (str,)}
#: The messages of a relayed login question and its answer (`login`).
PROMPT = "prompt"
ANSWER = "answer"
CANCEL = "cancel"
NAMED_TUPLES: dict[str, type[tuple[Any, ...]]] = {"ScriptResult": ScriptResult, "SeenProcess": SeenProcess,
                                                   "Launch": Launch}
MAX_MESSAGE = 16 << 20  # bytes of one request or reply; a longer one is refused before it is read
NONCE = 32
KEY_BYTES = 32  # the authkey the broker writes (BLAKE2b takes up to 64)
CLIENT_ROLE = b"client"
SERVER_ROLE = b"server"
HANDSHAKE_TIMEOUT = 5.0  # seconds for the whole key proof; a broker that does not answer in time is not used
#: struct ucred, three C ints (pid, uid, gid). Ints and frames are converted with int.to_bytes/from_bytes,
#: not `struct`: one shared library less to load on every reconnect.
UCRED_INTS, C_INT_BYTES = 3, 4
#: `multiprocessing.connection`'s frame header, which the broker's Listener reads: a big-endian signed length
#: (-1 would announce a longer one in 8 more bytes; no message of ours is that long).
FRAME_BYTES = 4
BASE64 = r"[A-Za-z0-9+/]*={0,2}"  # what _unbase64 takes where binascii has no strict mode (Python 3.10)


class NoAnswer(BrokerUnavailable):
    """The other end did not answer in time: stopped, in a debugger, swapping (it may still act later)."""


def encode(value: Any) -> Any:
    """`value` as plain JSON data: bytes {"b": base64}, tuples {"t": [...]}, the Host interface's named tuples
    {"n": [name, [...]]}, dicts {"d": {...}}; anything else not JSON is refused (TypeError)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b": binascii.b2a_base64(value, newline=False).decode("ascii")}
    if isinstance(value, tuple):
        name = type(value).__name__
        items = [encode(item) for item in value]
        return {"n": [name, items]} if NAMED_TUPLES.get(name) is type(value) else {"t": items}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"d": {key: encode(item) for key, item in value.items()}}
    raise TypeError(f"not sent to or from the broker: {type(value).__name__}")


def decode(data: Any) -> Any:
    """The value `encode` gave `data` for; ValueError for anything else."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if len(data) != 1:
        raise ValueError("an untagged object")
    ((tag, inner),) = data.items()
    if tag == "b" and isinstance(inner, str):
        return _unbase64(inner)
    if tag == "t" and isinstance(inner, list):
        return tuple(decode(item) for item in inner)
    if tag == "d" and isinstance(inner, dict):
        return {key: decode(item) for key, item in inner.items()}
    if tag == "n" and isinstance(inner, list) and len(inner) == 2 and inner[0] in NAMED_TUPLES \
            and isinstance(inner[1], list):
        return NAMED_TUPLES[inner[0]](*(decode(item) for item in inner[1]))
    raise ValueError(f"an unknown tag {tag!r}")


def _unbase64(text: str) -> bytes:
    """The bytes `encode` wrote as base64 (its alphabet, whole quads, padding at the end only); ValueError for
    any other text, which binascii would otherwise decode skipping what it does not know. (Neither the base64
    module nor `re` where binascii checks itself: a reconnect's import time.)"""
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text, strict_mode=True)
    import re

    if len(text) % 4 or not re.fullmatch(BASE64, text):
        raise binascii.Error("not base64")
    return binascii.a2b_base64(text)


class Wire:
    """One session's messages, each a JSON document; `receive` refuses one longer than its limit unread."""

    def __init__(self, conn: Endpoint) -> None:
        self.conn = conn

    @staticmethod
    def pack(value: Any) -> bytes:
        """`value` as the bytes of one message (both ends: jsontext, so a client imports no `json`)."""
        return jsontext.dumps(encode(value), separators=(",", ":")).encode()

    def send(self, value: Any) -> None:
        self.conn.send_bytes(self.pack(value))

    def receive(self, limit: int = MAX_MESSAGE, timeout: float | None = None) -> Any:
        """The next message; BrokerUnavailable for one that is not ours or that does not come in `timeout`
        seconds, OSError for one over `limit` bytes (the connection is then closed), EOFError at its end."""
        raw = self.receive_bytes(limit, timeout)
        try:
            return decode(jsontext.loads(raw))
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError and binascii.Error too
            raise BrokerUnavailable(f"connection broker: a message that is not ours ({exc.__class__.__name__})") \
                from None

    def receive_bytes(self, limit: int, timeout: float | None) -> bytes:
        if timeout is not None and not self.conn.poll(timeout):
            raise NoAnswer(f"connection broker: no answer within {timeout:g} s")
        return self.conn.recv_bytes(limit)

    def close(self) -> None:
        self.conn.close()


class SocketEndpoint:
    """A client's Unix socket to the broker, in `multiprocessing.connection`'s framing (FRAME, then the
    bytes), which the broker's Listener speaks: importing `multiprocessing` only for it would cost every
    command a fifth of a reconnect (tests/test_broker_wire.py pins the two framings together)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    def send_bytes(self, buf: bytes) -> None:
        self.sock.sendall(len(buf).to_bytes(FRAME_BYTES, "big", signed=True) + buf)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """The next message; EOFError at the end of the stream, OSError (and the socket closed) for a
        message over `maxlength` bytes, unread, as multiprocessing's."""
        size = int.from_bytes(self._read(FRAME_BYTES, first=True), "big", signed=True)
        if size < 0 or (maxlength is not None and size > maxlength):
            self.close()
            raise OSError("bad message length")
        return self._read(size)

    def _read(self, size: int, *, first: bool = False) -> bytes:
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if not count:
                if first and not got:
                    raise EOFError
                raise OSError("got end of file during message")
            got += count
        return bytes(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the end of the stream) is there to read within `timeout` seconds: a peek at
        its first byte under a socket timeout (`select` would load one more shared library per reconnect)."""
        if sys.platform == "win32":  # a named pipe there: multiprocessing's PipeConnection
            raise NotImplementedError("a Unix socket's endpoint")
        previous = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            self.sock.recv(1, _socket.MSG_PEEK)  # b"" at the end of the stream: readable too
        except (TimeoutError, BlockingIOError):  # BlockingIOError: `timeout` 0
            return False
        finally:
            self.sock.settimeout(previous)
        return True

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def proof(key: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    """What proves the key for `role`: a keyed BLAKE2b (a MAC by design; hmac would load OpenSSL)."""
    return statefiles.keyed_digest(key, role + first + second)


def prove_client(wire: Wire, key: bytes, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """The client's half of the key proof; BrokerUnavailable when the other end does not know the key."""
    deadline = time.monotonic() + timeout
    server_nonce = wire.receive_bytes(NONCE, timeout)
    if len(server_nonce) != NONCE:
        raise BrokerUnavailable("connection broker: its greeting is not ours")
    client_nonce = os.urandom(NONCE)
    wire.conn.send_bytes(client_nonce + proof(key, CLIENT_ROLE, server_nonce, client_nonce))
    answer = wire.receive_bytes(NONCE, max(0.0, deadline - time.monotonic()))
    if not statefiles.equal_digests(key, answer, proof(key, SERVER_ROLE, client_nonce, server_nonce)):
        raise BrokerUnavailable("connection broker: it does not know the key")


def prove_server(wire: Wire, key: bytes, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """The broker's half of the key proof; BrokerUnavailable when the client does not know the key."""
    server_nonce = os.urandom(NONCE)
    wire.conn.send_bytes(server_nonce)
    answer = wire.receive_bytes(2 * NONCE, timeout)
    client_nonce, claimed = answer[:NONCE], answer[NONCE:]
    if len(client_nonce) != NONCE or not statefiles.equal_digests(
            key, claimed, proof(key, CLIENT_ROLE, server_nonce, client_nonce)):
        raise BrokerUnavailable("connection broker: the client does not know the key")
    wire.conn.send_bytes(proof(key, SERVER_ROLE, client_nonce, server_nonce))


class Peer(NamedTuple):
    pid: int
    uid: int


def peer(conn: Endpoint) -> Peer | None:
    """The process at the other end of a Unix socket (the one that listens, seen from a client); None where
    the system does not tell (no SO_PEERCRED: not Linux; Windows: see `pipe_server`)."""
    option = getattr(_socket, "SO_PEERCRED", None)
    if option is None or sys.platform == "win32":
        return None
    sock = _socket.socket(fileno=os.dup(conn.fileno()))
    try:
        ucred = sock.getsockopt(_socket.SOL_SOCKET, option, UCRED_INTS * C_INT_BYTES)
        pid, uid = (int.from_bytes(ucred[start:start + C_INT_BYTES], sys.byteorder, signed=True)
                    for start in (0, C_INT_BYTES))
    finally:
        sock.close()
    return Peer(pid, uid)


def pipe_server(conn: Endpoint) -> int | None:
    """The PID of the process serving a named pipe (Windows); None when it cannot be told."""
    import ctypes
    from ctypes import wintypes

    from ..processes import kernel32

    pid = wintypes.ULONG()
    if not kernel32().GetNamedPipeServerProcessId(conn.fileno(), ctypes.byref(pid)):
        return None
    return int(pid.value)


def parse_reply(reply: Any) -> tuple[str, list[Any]]:
    """The reply's kind and its fields; BrokerUnavailable for one that is not ours."""
    if isinstance(reply, list) and reply and isinstance(reply[0], str) and reply[0] in REPLY_FIELDS:
        kind, *fields = reply
        expected = REPLY_FIELDS[kind]
        if len(fields) == len(expected) and all(map(isinstance, fields, expected)):
            return kind, fields
    raise BrokerUnavailable("connection broker: a reply that is not ours")


def raise_reply(kind: str, fields: list[Any]) -> NoReturn:
    """Raise what the broker's call raised (an "error" or "oserror" reply)."""
    if kind == "error":
        raise LauncherError.from_dict(fields[0])
    name, number, text = fields
    exc_class = getattr(builtins, name) if name in OS_ERRORS else OSError
    if exc_class is EOFError:
        raise EOFError(str(text))
    raise exc_class(number, str(text)) if isinstance(number, int) else exc_class(str(text))
