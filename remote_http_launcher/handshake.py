"""The HTTP handshake: one GET, 2xx means healthy.

Built on `http.client` so it is cheap to import (the warm path uses it) and can
run over any socket-like object, such as a paramiko `direct-tcpip` channel.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from typing import Any

from .config import Handshake

HANDSHAKE_TIMEOUT = 5.0
RETRY_INTERVAL = 0.1
SocketFactory = Callable[[float], Any]


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection whose socket comes from a factory (TCP or an SSH channel)."""

    def __init__(self, host: str, port: int, factory: SocketFactory, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._factory = factory

    def connect(self) -> None:
        self.sock = self._factory(self.timeout)


def tcp_factory(host: str, port: int) -> SocketFactory:
    return lambda timeout: socket.create_connection((host, port), timeout=timeout)


def get_status(host: str, port: int, target: str, factory: SocketFactory | None = None,
               timeout: float = HANDSHAKE_TIMEOUT) -> int | None:
    """Return the HTTP status of GET target, or None when nothing answered."""
    conn = _Connection(host, port, factory or tcp_factory(host, port), timeout)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException, EOFError):
        return None
    finally:
        conn.close()


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


def wait_healthy(host: str, port: int, handshake: Handshake | None, deadline: float,
                 factory: SocketFactory | None = None) -> str | None:
    """Retry the check until it passes or the deadline (a `time.monotonic()` value) passes."""
    while True:
        problem = check(host, port, handshake, factory, timeout=max(0.5, min(HANDSHAKE_TIMEOUT, deadline - time.monotonic())))
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(RETRY_INTERVAL)
