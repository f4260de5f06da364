"""The HTTP handshake: one GET, 2xx means healthy.

A few lines of HTTP/1.1 over a plain socket-like object rather than
`http.client`: the warm path runs it on every call and must import little, and
the same code runs unchanged over a paramiko `direct-tcpip` channel.
"""

from __future__ import annotations

import time

from .config import Handshake
from .statefiles import is_port

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable, Mapping
    from typing import Any

    SocketFactory = Callable[[float], Any]

HANDSHAKE_TIMEOUT = 5.0
MIN_TIMEOUT = 0.5  # a check near its deadline still gets this long
RETRY_INTERVAL = 0.1
MAX_STATUS_LINE = 8192


def preload() -> None:
    """Import what a check from this machine needs, e.g. while a service starts: not once it is up."""
    import _socket  # noqa: F401


def tcp_connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection from this machine: socket.create_connection's way (each address the name has, the
    last one's error if none connects), on `_socket`, socket.py's C half. socket.py builds its enums at
    import (importing `enum` and `selectors`): a tenth of a warm run, for a socket-like object that
    sends, receives, times out and closes as this one does."""
    import _socket

    failed: OSError | None = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(_lookup_name(host), port, 0,
                                                                   _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failed = exc
            continue
        return sock
    raise failed or OSError(f"{host}: no address to connect to")


def _lookup_name(host: str) -> str | bytes:
    """An ASCII name as bytes: resolving a str imports the IDNA codec first (~1.5 ms of a warm run)."""
    return host.encode("ascii") if host.isascii() else host


def resolves(host: str) -> bool:
    """Whether this machine can look `host` up; a temporary failure (no DNS server answering) counts
    as yes, since the name may well exist."""
    import _socket

    try:
        _socket.getaddrinfo(_lookup_name(host), None, 0, _socket.SOCK_STREAM)
    except _socket.gaierror as exc:
        return exc.errno not in (_socket.EAI_NONAME, getattr(_socket, "EAI_NODATA", _socket.EAI_NONAME))
    return True


def tcp_factory(host: str, port: int) -> SocketFactory:
    return lambda timeout: tcp_connect(host, port, timeout)


def get_status(host: str, port: int, target: str, factory: SocketFactory | None = None,
               timeout: float = HANDSHAKE_TIMEOUT) -> int | None:
    """Return the HTTP status of GET target, or None when nothing (valid) answered."""
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n" \
              "User-Agent: remote-http-launcher\r\n\r\n"
    try:
        conn = (factory or tcp_factory(host, port))(timeout)
    except OSError:
        return None
    try:
        conn.settimeout(timeout)
        conn.sendall(request.encode("ascii"))
        head = b""
        while b"\r\n" not in head and len(head) < MAX_STATUS_LINE:
            chunk = conn.recv(1024)
            if not chunk:
                break
            head += chunk
    except (OSError, EOFError):
        return None
    finally:
        conn.close()
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def check(host: str, port: int, handshake: Handshake | None, factory: SocketFactory | None = None,
          timeout: float = HANDSHAKE_TIMEOUT) -> str | None:
    """Run the configured check once; return None when healthy, else why not.

    Without a handshake, a successful TCP connection is the whole check.
    """
    factory = factory or tcp_factory(host, port)
    if handshake is None:
        try:
            factory(timeout).close()
        except OSError as exc:
            return f"port {port} on {host} is not accepting connections ({exc.__class__.__name__})"
        return None
    status = get_status(host, port, handshake.target, factory, timeout)
    if status is None:
        return f"no HTTP answer from {host}:{port}{handshake.target}"
    if not 200 <= status < 300:
        return f"GET {host}:{port}{handshake.target} answered HTTP {status}"
    return None


def port_field(handshake: Handshake | None) -> str:
    """Where the checked port is: `port`, or the field `handshake.port_name` names (e.g. a dask
    scheduler's `dashboard_port`), in a status record or a client payload."""
    return handshake.port_name if handshake is not None and handshake.port_name else "port"


def port_of(record: Mapping[str, object], handshake: Handshake | None) -> int | None:
    """The port the check runs on; None when the record has none there."""
    value = record.get(port_field(handshake))
    return value if is_port(value) else None


def missing_port(handshake: Handshake | None) -> str:
    return f"it reported no port '{port_field(handshake)}'"


def payload_answers(payload: Mapping[str, object], handshake: Handshake | None) -> bool:
    """A client connection payload names a valid host and port, and the service answers there."""
    host, port = payload.get("hostname"), port_of(payload, handshake)
    if not isinstance(host, str) or port is None:
        return False
    return check(host, port, handshake) is None


def wait_healthy(host: str, port: int, handshake: Handshake | None, deadline: float,
                 factory: SocketFactory | None = None) -> str | None:
    """Retry the check until it passes or the deadline (a `time.monotonic()` value) passes."""
    while True:
        timeout = max(MIN_TIMEOUT, min(HANDSHAKE_TIMEOUT, deadline - time.monotonic()))
        problem = check(host, port, handshake, factory, timeout)
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(RETRY_INTERVAL)
