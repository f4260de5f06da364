"""A TCP proxy that adds latency, counts the round trips the client waits for, and can freeze the link.

The benchmarks use it for a slow link (`rtt`), the fault tests for a silent
one: `freeze()` stops forwarding in both directions without closing either
side (what a dropped VPN or a sleeping Wi-Fi looks like to both ends: no
FIN, no RST, just silence; new connections are accepted but not forwarded),
and `thaw()` delivers what was held back and forwards again. `cut()` closes
every current connection (a link that died during sleep, seen on resume).
`freeze_after_greeting()` lets each new connection carry the server's first
bytes (an SSH server's greeting) and then freezes it: a link that dies during
the key exchange.

Each chunk is delivered `one_way` seconds after it was read, in order, in
both directions, so the link has a round-trip time of 2 * one_way. A new
connection is also charged the TCP handshake a real link would cost: the
proxy connects upstream 1.5 RTT after accepting (the client's SYN, the
SYN-ACK, the ACK that lets the server accept), so a server that speaks first
is heard 2 RTT after connect(), as on a real link.

Round trips are counted per connection as client "turns": the first
client→server chunk, and each one read after the client has received
something since its previous send (it was waiting for an answer), plus one
for the TCP handshake. A client that sends without waiting (pipelining,
window adjustments) can be over-counted; compare with the time difference. It runs an
asyncio loop in a daemon thread; listen on loopback only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.sshd import SSHServer

REFUSED_AT_ONCE = 2.0  # seconds: a local connection while a tunnel's link is down fails at once, never hangs


@dataclass
class Counters:
    connections: int = 0
    turns: int = 0  # client sends that follow a server answer, over all connections
    bytes_up: int = 0
    bytes_down: int = 0
    per_connection: list[int] = field(default_factory=list)

    def round_trips(self) -> int:
        """Handshakes plus turns: the round trips a client on a real link would have waited for."""
        return self.connections + self.turns

    def snapshot(self) -> tuple[int, int]:
        return self.connections, self.turns


class LinkProxy:
    def __init__(self, target: tuple[str, int], rtt: float = 0.0, listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = target
        self.rtt = rtt
        self.listen = listen
        self.counters = Counters()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.base_events.Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[asyncio.Event] = set()  # one per connection, set while it forwards (proxy loop only)
        self._frozen = False  # new connections start frozen
        self._greeting_only = False  # new connections freeze after the server's first chunk

    # ---- control, from any thread ----
    def start(self) -> LinkProxy:
        ready = threading.Event()
        error: list[BaseException] = []

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            try:
                self.server = self.loop.run_until_complete(
                    asyncio.start_server(self._handle, *self.listen, reuse_address=True))
                self.port = self.server.sockets[0].getsockname()[1]
            except BaseException as exc:
                error.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.close()

        self.thread = threading.Thread(target=main, name=f"linkproxy-{self.target}", daemon=True)
        self.thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self

    def freeze(self) -> None:
        """Stop forwarding, both ways, on every connection and on new ones, without closing anything."""
        self._call(frozen=True, greeting_only=False, flowing=False)

    def freeze_after_greeting(self) -> None:
        """New connections carry the server's first chunk, then freeze; current ones stay as they are."""
        self._call(frozen=False, greeting_only=True, flowing=None)

    def thaw(self) -> None:
        """Forward again, everywhere (what arrived meanwhile first)."""
        self._call(frozen=False, greeting_only=False, flowing=True)

    def cut(self) -> None:
        """Close every current connection, both ways; new ones are taken as the mode says."""
        assert self.loop is not None, "start() the proxy first"

        async def apply() -> None:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(5)

    def _call(self, *, frozen: bool, greeting_only: bool, flowing: bool | None) -> None:
        """Change the mode on the proxy's loop; returns once in effect."""
        assert self.loop is not None, "start() the proxy first"

        async def apply() -> None:
            self._frozen, self._greeting_only = frozen, greeting_only
            for link in self._links if flowing is not None else ():
                if flowing:
                    link.set()
                else:
                    link.clear()

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(5)

    def reset(self) -> None:
        self.counters = Counters()

    def close(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self.server is not None:
                self.server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            self.thread.join(5)

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the proxy ----
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        counters = self.counters
        counters.connections += 1
        index = len(counters.per_connection)
        counters.per_connection.append(1)
        state = {"received": True}  # the client's first send waits for an answer too
        _nodelay(writer)
        flowing = asyncio.Event()
        if not self._frozen:
            flowing.set()
        self._links.add(flowing)
        greeting_only = self._greeting_only
        try:
            up_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            reading_up = asyncio.ensure_future(self._read(reader, up_queue, counters, index, state, up=True))
            await asyncio.sleep(self.rtt * 1.5)
            await flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                reading_up.cancel()
                return
            _nodelay(up_writer)
            down_queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            jobs = [reading_up,
                    asyncio.ensure_future(self._deliver(up_queue, up_writer, flowing)),
                    asyncio.ensure_future(self._read(up_reader, down_queue, counters, index, state, up=False)),
                    asyncio.ensure_future(self._deliver(down_queue, writer, flowing, state, greeting_only))]
            try:
                # Done when both directions have delivered their EOF.
                await asyncio.gather(jobs[1], jobs[3])
            finally:
                for job in jobs:
                    job.cancel()
                up_writer.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
            self._links.discard(flowing)

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]],
                    counters: Counters, index: int, state: dict[str, bool], *, up: bool) -> None:
        one_way = self.rtt / 2
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            live = self.counters  # since the last reset: a connection older than that counts there too
            if up:
                if data and state["received"]:
                    live.turns += 1
                    if live is counters:
                        counters.per_connection[index] += 1
                    state["received"] = False
                live.bytes_up += len(data)
            else:
                live.bytes_down += len(data)
            await queue.put((now + one_way, data))
            if not data:
                return

    @staticmethod
    async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                       flowing: asyncio.Event, state: dict[str, bool] | None = None,
                       greeting_only: bool = False) -> None:
        """Write each chunk when due and `flowing`; `state` (server→client only) notes that the client got an
        answer; `greeting_only` freezes the connection after the first chunk."""
        while True:
            due, data = await queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await flowing.wait()
            if not data:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()
            if state is not None:
                state["received"] = True
            if greeting_only:
                flowing.clear()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# ---- for tests of tunnels whose link goes through the proxy ----

def through(proxy: LinkProxy, server: SSHServer) -> dict[str, str]:
    """~/.ssh/config options that reach `server` through `proxy` (its host key still checked under its name)."""
    return {"HostName": "127.0.0.1", "Port": str(proxy.port), "HostKeyAlias": server.host_key_line.split()[0]}


def get(port: int) -> bytes:
    """The demo service's health check through a local port."""
    with urllib.request.urlopen(f"http://localhost:{port}/healthcheck", timeout=10) as response:
        body: bytes = response.read()
        return body


def answering_within(port: int, timeout: float) -> float:
    """Seconds until the tunnel at `port` answers, polled as a client retrying would; fails after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if get(port) == b"ok\n":
                return time.monotonic() - start
        except OSError:
            pass
        assert time.monotonic() - start < timeout, f"port {port} did not answer within {timeout} s"
        time.sleep(0.2)


def refused_at_once(port: int) -> None:
    """A local connection to `port` fails, within REFUSED_AT_ONCE."""
    start = time.monotonic()
    try:
        get(port)
    except OSError:
        assert time.monotonic() - start < REFUSED_AT_ONCE, f"port {port} took {time.monotonic() - start:.1f} s"
    else:
        raise AssertionError(f"port {port} answered")
