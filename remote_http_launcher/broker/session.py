"""The broker's side of a session: a proven client's requests served on the broker's host and tunnels.

The wire, the requests and the replies are protocol.py's; this is what the
broker process does with them (server.py runs one session per client).
"""

from __future__ import annotations

import itertools
import logging
import posixpath
import threading
from typing import TYPE_CHECKING, Any, Protocol

from .. import scripts
from ..errors import BrokerUnavailable, LauncherError
from ..hosts.base import launch_answer
from .protocol import ANSWER, MAX_MESSAGE, OS_ERRORS, PROMPT, PROPERTIES, RECALL, RELAYED, Wire

if TYPE_CHECKING:
    from ..hosts.ssh import SSHHost
    from ..prompts import Prompt
    from .tunnels import Tunnels

#: Seconds the client's user has to answer one relayed login question.
ANSWER_TIMEOUT = 600.0
#: Requests served while the link waits for a login: the rest are answered ["login", why].
WITHOUT_LINK = frozenset({"info", "login", "channel_close", RECALL})
#: Status files a broker remembers (the oldest is forgotten first): more keys than one user runs on a host;
#: and the longest it remembers (a status record is well under a KiB).
MAX_REMEMBERED = 1024
MAX_REMEMBERED_BYTES = 64 << 10

log = logging.getLogger("remote_http_launcher.broker")


class StatusMemory:
    """What the broker's reads of files in its host's state directory (status files, and the launch locks
    beside them) last returned, by name, for every client (Host.recall_status_file): a command that lost
    its client file learns the service's port without a round trip, and checks it while the file is read
    again. Kept by name, so that recalling needs nothing of the link (it may be waiting for a login)."""

    def __init__(self) -> None:
        self._found: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def keep(self, name: str, found: bytes | None) -> None:
        with self._lock:
            self._found.pop(name, None)
            if found is not None and len(found) <= MAX_REMEMBERED_BYTES:
                self._found[name] = found
                if len(self._found) > MAX_REMEMBERED:
                    del self._found[next(iter(self._found))]

    def recall(self, name: str) -> bytes | None:
        with self._lock:
            return self._found.get(name)


class Usage(Protocol):
    """The broker as its sessions see it (server.Broker): its host (replaced after a reconnect), tunnels, use,
    the status files it read."""

    tunnels: Tunnels
    statuses: StatusMemory

    @property
    def host(self) -> SSHHost: ...

    @property
    def sftp_lock(self) -> Any: ...

    def used(self) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def waits_for_login(self) -> bool:
        """True while the link waits for a login only a client's user can answer."""

    def login(self, prompt: Prompt) -> None:
        """Log in again with `prompt` answering, and restore the link (every tunnel) with that login."""


def serve_session(wire: Wire, broker: Usage) -> None:
    """Answer one client's requests until it hangs up; its channels close with it, and so do the tunnels
    it claimed but did not ask to keep (a run that failed or vanished)."""
    channels: dict[int, Any] = {}
    claimed: set[str] = set()
    numbers = itertools.count(1)
    used = False
    try:
        while True:
            try:
                request = wire.receive()
            except EOFError:
                return
            except (OSError, BrokerUnavailable) as exc:
                log.info("ended a session: %s", exc)
                return
            if not (isinstance(request, list) and len(request) == 3 and isinstance(request[0], str)
                    and isinstance(request[1], list) and isinstance(request[2], dict)):
                log.info("ended a session: a request that is not ours")
                return
            method, args, kwargs = request
            if wire.conn.poll(0):  # a client waits for each reply: more to read now means it hung up
                log.info("ended a session: its client left before %s was served (it gave up waiting)", method)
                return
            if method != "info":  # `connections` asking how the broker is used is no use of it
                used = True
                broker.used()
            host = broker.host
            reply: list[Any]
            try:
                if method not in WITHOUT_LINK and broker.waits_for_login():
                    reply = ["login", f"the connection broker's link to {host.name} waits for a login"]
                elif method == "login":
                    broker.login(_relayed_prompt(wire))
                    reply = ["ok", None]
                elif method.startswith("tunnel_"):
                    reply = ["ok", _tunnel_call(broker.tunnels, claimed, method, args)]
                else:
                    reply = ["ok", _call(host, broker, channels, numbers, method, args, kwargs)]
            except LauncherError as exc:
                reply = ["error", exc.to_dict(), not host.transport.is_active()]
            except (OSError, EOFError) as exc:
                name = type(exc).__name__ if type(exc).__name__ in OS_ERRORS else "OSError"
                reply = ["oserror", name, getattr(exc, "errno", None), str(exc)]
            try:
                _send_reply(wire, reply)
            except (OSError, ValueError):
                return
    finally:
        for channel in channels.values():
            channel.close()
        for key in claimed:
            broker.tunnels.drop(key, "the run that opened it ended without it")
        if used:  # its idle time counts from the end of its last real session
            broker.used()


def _relayed_prompt(wire: Wire) -> Prompt:
    """Ask the client's user (the `login` request): one message per question, its answer back."""

    def ask(text: str, secret: bool) -> str:
        wire.send([PROMPT, text, secret])
        answer = wire.receive(timeout=ANSWER_TIMEOUT)
        if isinstance(answer, list) and len(answer) == 2 and answer[0] == ANSWER and isinstance(answer[1], str):
            return answer[1]
        raise EOFError(f"no answer ({answer[1] if isinstance(answer, list) and len(answer) == 2 else 'cancelled'})")

    return ask


def _send_reply(wire: Wire, reply: list[Any]) -> None:
    """The reply, or when it is longer than a client reads, that the client must make this call itself."""
    data = Wire.pack(reply)
    if len(data) > MAX_MESSAGE:
        data = Wire.pack(["unavailable", f"a reply of {len(data)} bytes (at most {MAX_MESSAGE})"])
    wire.conn.send_bytes(data)


def _tunnel_call(tunnels: Tunnels, claimed: set[str], method: str, args: list[Any]) -> Any:
    if method == "tunnel_claim":
        reused = tunnels.claim(*args)
        if reused is None:
            claimed.add(args[1])
        return reused
    if method == "tunnel_open":
        return tunnels.open(*args)
    if method == "tunnel_keep":
        tunnels.keep(*args)
        claimed.discard(args[0])
        return None
    if method == "tunnel_drop":
        claimed.discard(args[0])
        return tunnels.drop(args[0], "stopped")
    raise BrokerUnavailable(f"connection broker: unknown request {method!r}")


def _call(host: SSHHost, broker: Usage, channels: dict[int, Any], numbers: itertools.count[int], method: str,
          args: list[Any], kwargs: dict[str, Any]) -> Any:
    if method == "info":
        return broker.info()
    if method == RECALL:
        return broker.statuses.recall(str(args[0]))
    if method == "tcp_channel":
        number = next(numbers)
        channels[number] = host.tcp_channel(*args)
        return number
    if method == "channel_send":
        number, data, timeout = args
        channels[number].settimeout(timeout)
        channels[number].sendall(data)
        return None
    if method == "channel_recv":
        number, size, timeout = args
        channels[number].settimeout(timeout)
        return bytes(channels[number].recv(size))
    if method == "channel_close":
        channel = channels.pop(args[0], None)
        if channel is not None:
            channel.close()
        return None
    if method not in RELAYED:
        raise BrokerUnavailable(f"connection broker: unknown request {method!r}")
    if not RELAYED[method]:
        found = getattr(host, method)(*args, **kwargs)
        if method == "launch" and (printed := launch_answer(found)[1]) is not None:  # the record it waited for
            broker.statuses.keep(posixpath.basename(args[0].script_args[scripts.LAUNCH_STATUS_ARG]), printed)
        return found
    with broker.sftp_lock:  # state_dir too: after a reconnect it may be an SFTP request
        found = getattr(host, method) if method in PROPERTIES else getattr(host, method)(*args, **kwargs)
        if method == "read_status_file":
            broker.statuses.keep(str(args[0]), found[0])
        elif method == "read" and posixpath.dirname(str(args[0])) == host.state_dir:  # a launch's polls
            broker.statuses.keep(posixpath.basename(str(args[0])), found)
    return found
