"""Stock servers: services that write no status file (JupyterLab, dask, TensorBoard, `http.server`).

Their command reads `{port}`: the service program (sh/service.sh) chooses the
ports on the service's host and records them as `stock_ports` in a `starting`
record. The launcher, which watches the start anyway, writes the `running`
record once the service's own process group listens on `port` (and the
handshake answers, when there is one); a batch job's node is asked over TCP
from the login node, where its processes are not. `url_pattern` is matched
against the service's log meanwhile; the URL it finds is recorded too, and
rewritten to the client's way in (`client_url`).
"""

from __future__ import annotations

import time

from . import handshake, statefiles
from .service import job_of
from .statefiles import ServerState, is_port

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from typing import Any

    from .service import Service

STOCK_PORTS = "stock_ports"  # the record's member: {field: port} as the service program chose them
URL = "url"
URL_UNMATCHED = "url_pattern_unmatched"  # true in a record whose service never printed a matching line
URL_WAIT = 10.0  # seconds a listening service may take to print its URL before it counts as running without
MAX_LOG_SCAN = 1 << 20  # bytes of the log searched for the URL: it is printed at the start
TUNNEL_HOST = "127.0.0.1"  # where a tunnel's local end listens (tunnels/forward.py)


def chosen_ports(state: ServerState) -> dict[str, int] | None:
    """The ports the service program chose for a stock server's record; None for a status-file service."""
    ports = state.data.get(STOCK_PORTS)
    if not isinstance(ports, dict) or not is_port(ports.get("port")):
        return None
    return {name: port for name, port in ports.items() if isinstance(name, str) and is_port(port)}


class LogScan:
    """The service's log read as it grows, searched for `pattern`."""

    def __init__(self, service: Service, state: ServerState, pattern: str | None) -> None:
        self.host = service.host
        self.path = state.log or service.log_file
        if pattern:
            import re  # only for a url_pattern: a first launch imports no `re` before its service starts

            self.pattern: re.Pattern[str] | None = re.compile(pattern)
        else:
            self.pattern = None
        self.offset = 0
        self.text = b""
        self.url: str | None = None

    def poll(self) -> str | None:
        """The first match so far (None: none yet, or no pattern)."""
        if self.pattern is None or self.url is not None or len(self.text) >= MAX_LOG_SCAN:
            return self.url
        result = self.host.read_from(self.path, self.offset)
        if result is not None and result[0]:
            chunk, self.offset = result
            self.text = (self.text + chunk)[:MAX_LOG_SCAN]
            match = self.pattern.search(self.text.decode("utf-8", "replace"))
            if match is not None:
                self.url = match.group(0)
        return self.url


class StockStart:
    """Watches a stock server start; `poll` writes and returns its `running` record once it serves."""

    def __init__(self, service: Service, state: ServerState) -> None:
        self.service = service
        self.log = LogScan(service, state, service.config.url_pattern)
        self.serving_since: float | None = None

    def poll(self, state: ServerState) -> ServerState | None:
        ports = chosen_ports(state)
        if ports is None or state.status != "starting":
            return None
        url = self.log.poll()
        now = time.monotonic()
        if self.serving_since is None:
            if not self._serves(state, ports):
                return None
            self.serving_since = now
        if url is None and self.log.pattern is not None and now - self.serving_since < URL_WAIT:
            return None
        record: dict[str, Any] = {**state.data, "status": "running", **ports}
        if url is not None:
            record[URL] = url
        elif self.log.pattern is not None:
            record[URL_UNMATCHED] = True
        self.service.host.write_atomic(self.service.status_file, statefiles.encode(record))
        return ServerState.parse(record)

    def _serves(self, state: ServerState, ports: dict[str, int]) -> bool:
        """The service's own process group listens on its port (where the host can tell) and the check the
        config asks for (the handshake, else a TCP connection) passes."""
        host, config = self.service.host, self.service.config
        port = ports["port"]
        if job_of(state) is None and state.pid is not None and host.listens(state.pid, port) is False:
            return False
        checked = ports.get(handshake.port_field(config.handshake), port)
        interface = self.service.server_interface(state)
        return handshake.check(interface, checked, config.handshake,
                               lambda timeout: host.tcp_channel(interface, checked, timeout)) is None


def scan_log_url(service: Service, state: ServerState) -> str | None:
    """`url_pattern`'s first match in the log of a service that reports its own status (read once)."""
    return LogScan(service, state, service.config.url_pattern).poll()


def client_url(payload: dict[str, Any], state: ServerState, url: str | None) -> str:
    """The URL as this machine reaches it: the service's own (`url`, as its log printed it) with its host and
    port replaced by the client's way in (a tunnel's local end, or the host the client connects to), its
    path and query (a token) kept; without one, the plain `http://host:port/`. A URL on another of the
    service's ports (a dask dashboard's) goes to that port's way in."""
    host = TUNNEL_HOST if "tunneled-port" in payload else str(payload["hostname"])
    port = payload["port"]
    if url is None:
        return f"http://{_netloc(host, port)}/"
    from urllib.parse import urlsplit, urlunsplit  # only for a stock server's URL

    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        printed = parts.port
    except ValueError:
        printed = None
    for name, remote in state.extra_ports().items():
        if remote == printed and is_port(payload.get(name)):
            port = payload[name]
    netloc = _netloc(host, port)
    return urlunsplit((parts.scheme or "http", netloc, parts.path or "/", parts.query, parts.fragment))


def _netloc(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
