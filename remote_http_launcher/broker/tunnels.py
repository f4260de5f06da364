"""Tunnels kept by the broker: each service's forwards are a thread of it, over its one SSH connection.

The keeper's behaviour, per key, in the broker (keeper/process.py is the
process-per-tunnel edition, still used with `connection_persist: 0`): the
key's keeper lock is held by the broker (its record names the broker, so
`stop` asks the broker to end that tunnel instead of signalling the
process), the forwards bind 127.0.0.1 free ports, a watchdog thread checks
the service's PID every `watchdog_interval`, and when the service is gone the
forwards close, the client file naming them is removed and the lock released.
The broker's other tunnels go on. A lost link is the broker's to restore
(server.Broker), for all its tunnels at once; meanwhile each key's lock says
until when, and how long the broker takes to notice a silent link, so a run
then waits for it (keeper/process.claim) instead of replacing the tunnel.

The client side of a run (`run_tunnel`) drives the launcher as the keeper
does, but in the caller's process: the broker claims the key, opens the
forwards when the launcher asks for its way in, and keeps them once the run
succeeded; a run that fails or vanishes before that leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .. import statefiles
from ..config import Config, load_config
from ..errors import HostError, LauncherError
from ..keeper.lock import KeeperLock
from ..statefiles import ClientPayload, ServerState
from .registry import STEP

if TYPE_CHECKING:
    from ..hosts.ssh import SSHHost
    from ..keeper.tunnel import Tunnel
    from ..progress import Progress
    from ..prompts import Prompt
    from ..service import Service

log = logging.getLogger("remote_http_launcher.broker")


class BrokerLike(Protocol):
    host: SSHHost
    sftp_lock: Any
    log_path: Path
    broker_id: str

    def refresh_keepalive(self) -> None: ...

    def silence_bound(self) -> float: ...


class BrokeredKeeperLock(KeeperLock):
    """The key's keeper lock, held by a broker: the record says which (`broker`: the path of its lock)."""

    def __init__(self, client_path: Path, key: str, broker_id: str) -> None:
        super().__init__(client_path, key)
        self.broker_id = broker_id

    def holder(self) -> dict[str, str]:
        return {**super().holder(), "broker": self.broker_id}


class Kept(NamedTuple):
    config: Config
    key: str
    client_path: Path
    lock: BrokeredKeeperLock
    tunnel: Tunnel
    done: threading.Event
    previous: ClientPayload | None  # the payload of the keeper this tunnel replaces: its local ports are reused


class Tunnels:
    """The broker's tunnels by key."""

    def __init__(self, broker: BrokerLike) -> None:
        self.broker = broker
        self.by_key: dict[str, Kept] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.by_key)

    def claim(self, raw: dict[str, Any], key: str, client_path: str) -> ClientPayload | None:
        """Take the key's keeper lock, or the payload of a live keeper (ours or a process) that answers."""
        from ..keeper.process import claim
        from ..keeper.tunnel import Tunnel
        from ..launcher import Launcher

        config = load_config(raw)
        path = Path(client_path)
        lock = BrokeredKeeperLock(path, key, self.broker.broker_id)
        reused, previous = claim(lock, Launcher(config, key, path))
        if reused is not None:
            return reused
        with self._lock:
            old = self.by_key.pop(key, None)
            self.by_key[key] = Kept(config, key, path, lock, Tunnel(self.broker.host.transport), threading.Event(),
                                     previous)
        if old is not None:  # its lock was broken as stale: the forwards are no longer anyone's
            self._end(old, "replaced")
        return None

    def open(self, key: str, state_data: dict[str, Any]) -> dict[str, Any]:
        """Forward the service's ports (again, for a relaunch); the client payload."""
        from ..service import Service

        kept = self.by_key[key]
        state = ServerState.parse(state_data)
        assert state is not None
        service = Service(self.broker.host, kept.config, key)
        return kept.tunnel.reforward(service, state, kept.previous, self.broker.log_path)

    def keep(self, key: str, state_data: dict[str, Any], payload: ClientPayload) -> None:
        """The run succeeded: publish the payload and watch the service until it is gone."""
        kept = self.by_key[key]
        state = ServerState.parse(state_data)
        assert state is not None
        kept.lock.silence_bound = self.broker.silence_bound()  # a run meeting a silent tunnel waits that long
        kept.lock.publish(payload)
        self.broker.refresh_keepalive()  # at the watchdog interval now: a dead link is noticed as soon
        threading.Thread(target=self._watch, args=(kept, state), daemon=True, name=f"rhl-watch-{key}").start()

    def drop(self, key: str, why: str) -> bool:
        """End the key's tunnel (`stop`, or a run that failed); False when we kept none."""
        with self._lock:
            kept = self.by_key.pop(key, None)
        if kept is None:
            return False
        self._end(kept, why)
        return True

    def drop_all(self, why: str) -> None:
        for key in list(self.by_key):
            self.drop(key, why)

    def use_transport(self, transport: Any) -> None:
        """After a reconnect (or None while the link is down): new local connections use this one."""
        for kept in list(self.by_key.values()):
            kept.tunnel.transport = transport

    def reconnecting(self, until: float | None) -> None:
        """Our link is down and we restore it until `until` (None: it is up again): each kept key's lock
        says so, as a keeper process's does, so a run meanwhile waits for us instead of replacing the tunnel."""
        with self._lock:  # a key still here is not released yet (ending pops it first)
            for kept in self.by_key.values():
                kept.lock.reconnecting(until)

    def _watch(self, kept: Kept, state: ServerState) -> None:
        from ..service import ended, is_ours

        while not kept.done.wait(kept.config.watchdog_interval):
            try:
                with self.broker.sftp_lock:
                    alive = is_ours(self.broker.host, state)
            except HostError as exc:
                log.info("%s: check failed (%s); the broker restores the link", kept.key, exc)
                continue
            if not alive:
                with self._lock:
                    if self.by_key.get(kept.key) is kept:
                        del self.by_key[kept.key]
                self._end(kept, ended(state))
                return

    def _end(self, kept: Kept, why: str) -> None:
        log.info("%s: closing the tunnel: %s", kept.key, why)
        kept.done.set()
        kept.tunnel.close()
        payload = statefiles.read_payload(kept.client_path)
        if payload is not None and payload.get("keeper_pid") == os.getpid():
            statefiles.remove(kept.client_path)
        kept.lock.release()


def run_tunnel(config: Config, key: str, client_path: Path, progress: Progress, prompt: Prompt | None, *,
               accept_new_host_key: bool = False) -> tuple[ClientPayload, bool] | None:
    """A tunnel run whose forwards the destination's broker keeps; None when no broker can (then the
    caller starts a keeper process, which logs in itself)."""
    try:
        return _run_tunnel(config, key, client_path, progress, prompt, accept_new_host_key)
    except LauncherError as exc:
        if exc.step != STEP:
            raise
        log.info("%s: no connection broker keeps the tunnel (%s); starting a tunnel keeper", key, exc)
        return None


def _run_tunnel(config: Config, key: str, client_path: Path, progress: Progress, prompt: Prompt | None,
                accept_new_host_key: bool) -> tuple[ClientPayload, bool]:
    from ..launcher import Launcher
    from .client import BrokeredHost, attach

    progress.phase(f"connecting to {config.ssh_target}")
    attached = attach(config.ssh_target, config.connection_persist, prompt, accept_new_host_key=accept_new_host_key)
    host = BrokeredHost(config.ssh_target, config.connection_persist, prompt, attached)
    try:
        # YAML values JSON lacks (dates) travel as str(), as they do to the keeper
        raw = json.loads(json.dumps(dict(config.raw), default=str))
        reused = host.call("tunnel_claim", raw, key, str(client_path))
        if reused is not None:
            statefiles.write_atomic(client_path, statefiles.encode(reused))
            return reused, True
        def open_tunnel(service: Service, state: ServerState) -> dict[str, Any]:
            progress.phase("opening the tunnel")
            return host.call("tunnel_open", key, state.data)  # type: ignore[no-any-return]

        try:
            payload, state = Launcher(config, key, client_path, progress).serve(host, open_tunnel)
            host.call("tunnel_keep", key, state.data, payload)
        except BaseException:
            if host.fallback is None:
                host.call("tunnel_drop", key)
            raise
        return payload, False
    finally:
        host.close()
