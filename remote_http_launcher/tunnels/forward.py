"""Local port forwards over the launcher's own SSH connection (`tunnel: true`).

sshtunnel's threading forward server does the listening; we drive it with the
Transport the launcher already authenticated (no second login, no `ssh`
binary) and with a handler tuned for bulk data, since sshtunnel's (16 KiB
select loop, default 2 MiB window and 32 KiB packets) reaches about a third of
`ssh -L`: large channel windows and packets, large blocking reads with one
thread per direction, and no Nagle delay on the local socket.

The transport is looked up per connection, so after a reconnect the keeper
swaps it in and the local ports, hence the client connection file, stay the
same. A keeper that replaces another takes its local ports again when they are
free (clients may hold them); otherwise the system picks free ones.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LauncherError
from ..processes import OUT_OF_FDS, connection_cap
from ..ssh._paramiko import ForwardHandler, ThreadingForwardServer, paramiko

if TYPE_CHECKING:
    from ..service import Service
    from ..statefiles import ServerState

LOCAL_HOST = "127.0.0.1"  # never a wildcard: the tunnel must not open the service to the network
WINDOW_SIZE = 16 * 2**20
MAX_PACKET_SIZE = 256 * 2**10  # fewer, bigger packets: per-packet work is what limits paramiko
READ_SIZE = 2**20
CHANNEL_TIMEOUT = 10.0
ACCEPT_POLL = 0.5
MAX_CONNECTIONS = 256  # per forwarded port at once (fewer under a low open-file limit); more are closed at once
ACCEPT_BACKOFF = 0.5  # seconds without accepting on a port after the process ran out of descriptors
log = logging.getLogger("remote_http_launcher.tunnel")


class _Handler(ForwardHandler):  # type: ignore[misc]  # sshtunnel has no type hints
    """One local connection: a direct-tcpip channel, then a pump per direction (half-close kept)."""

    tunnel: Tunnel
    remote_address: tuple[str, int]

    def handle(self) -> None:
        transport = self.tunnel.transport
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("the SSH connection is down")
            channel = transport.open_channel("direct-tcpip", self.remote_address, self.request.getpeername(),
                                             window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE,
                                             timeout=CHANNEL_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("forward to %s:%d failed: %s", *self.remote_address, str(exc) or exc.__class__.__name__)
            return
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._redirect(channel)
        finally:
            channel.close()

    def _redirect(self, chan: paramiko.Channel) -> None:
        upstream = threading.Thread(target=self._upstream, args=(chan,), daemon=True)
        upstream.start()
        try:
            while data := chan.recv(READ_SIZE):
                self.request.sendall(data)
            self.request.shutdown(socket.SHUT_WR)
        except OSError:
            _shutdown(self.request)  # the local peer is gone: wake the other pump too
        upstream.join()

    def _upstream(self, chan: paramiko.Channel) -> None:
        try:
            while data := self.request.recv(READ_SIZE):
                chan.sendall(data)
            chan.shutdown_write()
        except (OSError, EOFError):
            chan.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingForwardServer):  # type: ignore[misc]
    """One forwarded port. Its connections are capped (the excess closed at once: a local client flood
    must not take the descriptors the rest of the process needs), and out of descriptors it pauses
    instead of spinning on a listening socket that stays readable."""

    # POSIX: a port whose last connections linger in TIME_WAIT can be taken again (a replaced keeper's);
    # a port another socket listens on still cannot. On Windows the option would let others share the port.
    allow_reuse_address = sys.platform != "win32"
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = connection_cap(MAX_CONNECTIONS)
        self.connections = 0
        self._count = threading.Lock()
        self._starved = False

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            request: tuple[socket.socket, Any] = super().get_request()
        except OSError as exc:
            if exc.errno in OUT_OF_FDS:
                if not self._starved:
                    log.warning("forward of local port %d: out of file descriptors (%s); pausing",
                                self.server_address[1], exc)
                self._starved = True
                time.sleep(ACCEPT_BACKOFF)
            raise
        self._starved = False
        return request

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._count:
            if self.connections >= self.max_connections:
                log.info("forward of local port %d: %d connections open; refused one", self.server_address[1],
                         self.max_connections)
                return False
            self.connections += 1
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count:
            self.connections -= 1


class Tunnel:
    """Forwards from 127.0.0.1 (free ports) to addresses as seen from the SSH server, over one transport."""

    def __init__(self, transport: paramiko.Transport | None) -> None:
        self.transport = transport  # replaced after a reconnect; None while the link is down
        self._servers: list[_Server] = []
        self._closing: threading.Thread | None = None  # listeners still closing (`close(wait=False)`)

    def forward(self, remote_host: str, remote_port: int, local_port: object = 0, *, pinned: bool = False) -> int:
        """Start forwarding a local port to remote_host:remote_port: `local_port` when it is a port that is
        free, else a new one (`pinned`: else an error naming the config's `local_port`); return the local
        port."""
        handler = type("Handler", (_Handler,), {"tunnel": self, "remote_address": (remote_host, remote_port),
                                               "logger": log})
        server = None
        if isinstance(local_port, int) and not isinstance(local_port, bool) and 0 < local_port < 65536:
            if self._closing is not None:  # one of our closing listeners may hold that port still
                self._closing.join()
            try:
                server = _Server((LOCAL_HOST, local_port), handler, logger=log)
            except OSError as exc:
                if pinned:
                    raise LauncherError(f"local_port: 127.0.0.1:{local_port} is in use by another program "
                                        f"({exc.strerror or exc}); free it or choose another local_port",
                                        step="local_port") from None
                log.info("local port %d not free again (%s); taking another", local_port, exc)
        if server is None:
            server = _Server((LOCAL_HOST, 0), handler, logger=log)
        self._servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": ACCEPT_POLL}, daemon=True,
                         name=f"forward-{remote_port}").start()
        return int(server.server_address[1])

    def forward_service(self, service: Service, state: ServerState,
                        previous: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Forward the service's port and every `*_port` / `*-port` it reported; the client payload.

        `previous` (the payload of a keeper we replace) names the local ports to take again when free.
        """
        assert state.port is not None
        interface = service.server_interface(state)
        before = previous or {}
        payload: dict[str, Any] = {
            "hostname": "localhost",
            "port": self.forward(interface, state.port, service.config.local_port or before.get("port"),
                                 pinned=service.config.local_port is not None),
            "tunneled-host": service.config.hostname,
            "tunneled-port": state.port,
            "tunneled-network-interface": interface,
        }
        for name, remote in state.extra_ports().items():
            payload[name] = self.forward(interface, remote, before.get(name))
            payload[f"tunneled-{name}"] = remote
        return payload

    def reforward(self, service: Service, state: ServerState, previous: Mapping[str, object] | None,
                  log_path: Path) -> dict[str, Any]:
        """forward_service for a state the launcher is checking (see Launcher._verify), with who keeps the
        forwards (this process, logging to `log_path`). Called again for a relaunch: the forwards of the
        state that failed its checks close first."""
        self.close(wait=False)
        return {**self.forward_service(service, state, previous), "keeper_pid": os.getpid(),
                "keeper_log": str(log_path)}

    def redirect(self, service: Service, state: ServerState, payload: Mapping[str, object]) -> dict[str, Any] | None:
        """Point the forwards of `payload` (the one we serve) at `state`'s ports, keeping their listeners
        open: a connection made during the switch reaches the old service or the new one, never a closed
        port. Connections already open stay with the old one. The new payload; None (nothing changed) when
        `state` reports other ports by name than `payload` forwards."""
        assert state.port is not None
        interface = service.server_interface(state)
        remote = {"port": state.port, **state.extra_ports()}
        servers = {int(server.server_address[1]): server for server in self._servers}
        local = {name: payload.get(name) for name in remote}
        if set(local.values()) != set(servers) or len(servers) != len(remote):
            return None
        updated: dict[str, Any] = {**payload, "tunneled-port": state.port, "tunneled-network-interface": interface}
        for name, port in remote.items():
            servers[local[name]].RequestHandlerClass.remote_address = (interface, port)  # type: ignore[index]
            if name != "port":
                updated[f"tunneled-{name}"] = port
        return updated

    def close(self, *, wait: bool = True) -> None:
        """Stop every forward; without `wait` the listeners finish closing on a thread (each at once on Linux,
        elsewhere within ACCEPT_POLL)."""
        servers, self._servers = self._servers, []
        if wait:
            _stop(servers)
        elif servers:
            self._closing = threading.Thread(target=_stop, args=(servers,), daemon=True, name="forward-close")
            self._closing.start()


def _stop(servers: list[_Server]) -> None:
    for server in servers:
        try:  # wakes its accept loop at once where the system does (Linux), else it notices within ACCEPT_POLL
            server.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.shutdown()
        server.server_close()
