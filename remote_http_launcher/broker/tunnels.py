"""Tunnels kept by the broker: each service's forwards ride on its one SSH connection (a tunnels/watch.Link).

The keeper's job, per key, in the broker (keeper/process.py is the
process-per-tunnel edition, used with `connection_persist: 0`), with the same
core (tunnels/): the key's keeper lock is held by the broker (its record
names the broker, so `stop` asks the broker to end that tunnel instead of
signalling the process), the forwards bind 127.0.0.1 free ports, a watch
thread per key checks the service every `watchdog_interval`, and when the
service is gone the forwards close, the client file naming them is removed
and the lock released. The broker's other tunnels go on. A lost link is
restored once for all of them (Link.restore).

The client side of a run (`run_tunnel`) drives the launcher as the keeper
does, but in the caller's process: the broker claims the key, opens the
forwards when the launcher asks for its way in, and keeps them once the run
succeeded; a run that fails or vanishes before that leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import statefiles
from ..errors import BrokerUnavailable
from ..progress import Progress
from ..statefiles import ClientPayload, ServerState
from ..tunnels.claim import stop_owner
from ..tunnels.daemon import config_from, config_json
from ..tunnels.lock import KeeperLock

if TYPE_CHECKING:
    from ..config import Config
    from ..locks import LockOwner
    from ..prompts import Prompt
    from ..service import Service
    from ..tunnels.watch import Kept, Link
    from .protocol import Wire
    from .registry import BrokerFiles

BROKER_ATTEMPTS = 2  # a run whose broker died is run once more, in the broker that replaces it
log = logging.getLogger("remote_http_launcher.broker")


class BrokerLike(Protocol):
    link: Link
    log_path: Path
    broker_id: str

    def record_tunnels(self, locks: list[str]) -> None:
        """Say in the broker's lock which keeper locks it holds: a broker after it restores those tunnels."""


class Tunnels:
    """The broker's tunnels by key (the link's `kept`)."""

    def __init__(self, broker: BrokerLike) -> None:
        self.broker = broker
        self._lock = threading.Lock()

    @property
    def by_key(self) -> dict[str, Kept]:
        return self.broker.link.kept

    def __len__(self) -> int:
        return len(self.by_key)

    def claim(self, raw: dict[str, Any], key: str, client_path: str) -> ClientPayload | None:
        """Take the key's keeper lock, or the payload of a live holder (ours, a keeper process or another
        broker) that answers."""
        from ..tunnels.claim import claim
        from ..tunnels.forward import Tunnel
        from ..tunnels.watch import Kept

        config = config_from(raw)
        path = Path(client_path)
        lock = KeeperLock(path, key, self.broker.broker_id)
        lock.config = raw
        reused, previous = claim(lock, config, Progress.silent(), self._stop_holder, self._restoring)
        if reused is not None:
            return reused
        link = self.broker.link
        with self._lock:
            old = self.by_key.pop(key, None)
            self.by_key[key] = Kept(config, key, path, lock, Tunnel(link.host.transport), threading.Event(),
                                     previous)
        if old is not None:  # its lock was broken as stale: the forwards are no longer anyone's
            link.end(old, "replaced")
        return None

    def _restoring(self, owner: LockOwner) -> bool:
        """Our own tunnel whose link is down or being restored (the link's state, under its lock): kept."""
        return owner.data.get("broker") == self.broker.broker_id and self.broker.link.lost()

    def _stop_holder(self, owner: LockOwner, key: str) -> bool:
        """End a silent tunnel: ours is dropped, another broker's is asked for, a keeper process is stopped."""
        broker = owner.data.get("broker")
        if broker == self.broker.broker_id:
            self.drop(key, "its tunnel does not answer")
        elif isinstance(broker, str):
            from .client import stop_tunnel

            stop_tunnel(broker, key)  # it removes that tunnel's client file and lock itself
        else:
            stop_owner(owner, key)
        return True

    def open(self, key: str, state_data: dict[str, Any]) -> dict[str, Any]:
        """Forward the service's ports (again, for a relaunch); the client payload."""
        from ..service import Service

        kept = self.by_key[key]
        state = ServerState.parse(state_data)
        assert state is not None
        service = Service(self.broker.link.host, kept.config, key)
        return kept.tunnel.reforward(service, state, kept.previous, self.broker.log_path)

    def keep(self, key: str, state_data: dict[str, Any], payload: ClientPayload) -> None:
        """The run succeeded: publish the payload and watch the service until it is gone."""
        kept = self.by_key[key]
        state = ServerState.parse(state_data)
        assert state is not None
        link = self.broker.link
        kept.lock.silence_bound = link.silence_bound()  # a run meeting a silent tunnel waits that long
        kept.lock.publish(payload)
        self._record()
        link.keepalive()  # at the watch interval now: a dead link is noticed as soon
        threading.Thread(target=self._watch, args=(kept, state), daemon=True, name=f"rhl-watch-{key}").start()

    def _watch(self, kept: Kept, state: ServerState) -> None:
        why = self.broker.link.watch(kept, state)
        with self._lock:
            if self.by_key.get(kept.key) is not kept:
                return  # dropped (and ended) meanwhile
            del self.by_key[kept.key]
        self.broker.link.end(kept, why)
        self._record()

    def _record(self) -> None:
        with self._lock:
            self.broker.record_tunnels(sorted(kept.lock.path for kept in self.by_key.values()
                                              if kept.lock.published is not None))

    def restore(self, lock_paths: list[str]) -> None:
        """Keep again, on their local ports, the tunnels a broker before us held (for this destination) and
        that nobody keeps now: each one whose service still runs. Errors are logged: the next command for
        a key that could not be restored makes its tunnel as usual."""
        for path in lock_paths:
            try:
                self._restore(Path(path))
            except Exception as exc:  # one tunnel's failure leaves the others to restore
                log.info("%s: not restored: %s", path, exc)

    def _restore(self, lock_path: Path) -> None:
        from ..locks import LockOwner
        from ..service import Service
        from ..tunnels.lock import recorded_config

        statefiles.check_trusted(lock_path, "keeper lock")
        owner = LockOwner.parse(statefiles.read_bytes(lock_path))
        raw = recorded_config(owner) if owner is not None else None
        key = owner.data.get("key") if owner is not None else None
        if owner is None or raw is None or not isinstance(key, str) or owner.same_process() \
                or owner.data.get("broker") != self.broker.broker_id:
            return  # kept by a live holder, or not one of ours
        client_path = lock_path.with_name(f"{key}.json")
        if self.claim(raw, key, str(client_path)) is not None:
            return  # a live holder keeps it meanwhile
        kept = self.by_key[key]
        link = self.broker.link
        service = Service(link.host, kept.config, key)
        with link.lock:
            state = service.read_state()
            ours = state is not None and state.status == "running" and service.is_ours(state)
        if state is None or not ours:
            self.drop(key, "its service is gone")
            return
        payload: ClientPayload = self.open(key, state.data)  # type: ignore[assignment]
        statefiles.write_atomic(client_path, statefiles.encode(payload))
        self.keep(key, state.data, payload)
        log.info("%s: restored the tunnel of the previous broker on port %s", key, payload.get("port"))

    def drop(self, key: str, why: str) -> bool:
        """End the key's tunnel (`stop`, or a run that failed); False when we kept none."""
        with self._lock:
            kept = self.by_key.pop(key, None)
        if kept is None:
            return False
        self.broker.link.end(kept, why)
        self._record()
        return True

    def drop_all(self, why: str) -> None:
        for key in list(self.by_key):
            self.drop(key, why)


def claim_timeout(config: Config) -> float:
    """How long the broker may take to claim a tunnel: waiting for another run to start the service, then
    stopping a silent holder, and a request's own bound."""
    from ..service import KILL_WAIT, STOP_TIMEOUT
    from ..tunnels.claim import STARTING_GRACE
    from .client import REQUEST_TIMEOUT

    return config.startup_timeout + STARTING_GRACE + STOP_TIMEOUT + KILL_WAIT + REQUEST_TIMEOUT


def run_tunnel(config: Config, key: str, client_path: Path, progress: Progress, prompt: Prompt | None, *,
               accept_new_host_key: bool = False) -> tuple[ClientPayload, bool] | None:
    """A tunnel run whose forwards the destination's broker keeps; None when no broker can (then the
    caller starts a keeper process, which logs in itself). A broker that dies during the run is replaced
    by a new one, which runs it again (and restores the dead broker's tunnels): a keeper process only
    when no broker can run."""
    from .client import attach

    for attempt in range(BROKER_ATTEMPTS):
        try:
            progress.phase(f"connecting to {config.ssh_target}")
            attached = attach(config.ssh_target, config.connection_persist, prompt,
                              accept_new_host_key=accept_new_host_key)
        except BrokerUnavailable as exc:
            log.info("%s: no connection broker keeps the tunnel (%s); starting a tunnel keeper", key, exc)
            return None
        try:
            return _run_tunnel(config, key, client_path, progress, prompt, attached)
        except BrokerUnavailable as exc:
            if attempt + 1 == BROKER_ATTEMPTS:
                log.info("%s: the connection broker failed again (%s); starting a tunnel keeper", key, exc)
                return None
            log.info("%s: the connection broker failed during the run (%s); running it in a new one", key, exc)
    return None


def _run_tunnel(config: Config, key: str, client_path: Path, progress: Progress, prompt: Prompt | None,
                attached: tuple[Wire, BrokerFiles]) -> tuple[ClientPayload, bool]:
    from ..launcher import Launcher
    from .client import BrokeredHost

    host = BrokeredHost(config.ssh_target, config.connection_persist, prompt, attached)
    try:
        raw = json.loads(config_json(config))
        reused = host.call_within(claim_timeout(config), "tunnel_claim", raw, key, str(client_path))
        if reused is not None:
            statefiles.write_atomic(client_path, statefiles.encode(reused))
            return reused, True
        def open_tunnel(service: Service, state: ServerState) -> dict[str, Any]:
            progress.phase("opening the tunnel")
            return dict(host.call("tunnel_open", key, state.data))

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
