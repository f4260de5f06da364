"""`stop`: the service, its tunnel (whoever keeps it) and their state files and logs, with what was done."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from .. import statefiles
from ..clientfile import keeper_log_path
from ..config import Config, evaluate_key
from ..connect import open_host
from ..progress import Progress
from ..prompts import Prompt
from ..service import STOP_TIMEOUT, Service, job_of
from ..tunnels.claim import stop_owner
from ..tunnels.lock import KeeperLock, is_keeper
from .entries import STALE, classify, server_entry

if TYPE_CHECKING:
    from ..locks import LockOwner

RACING_RELAUNCHES = 3  # records a stop follows while launches racing with it rewrite the status file


class _Stopped(TypedDict):
    pid: int | None  # None: a batch job whose service had not started
    signal: str  # the last one needed: TERM or KILL; CANCEL for a batch job cancelled while queued


class StoppedProcess(_Stopped, total=False):
    job_id: str  # a batch job's (`scheduler` configs)


class StopResult(TypedDict):
    key: str
    host: str
    status_before: str
    stopped: bool
    processes: list[StoppedProcess]
    refused: str | None  # why a recorded process was left alone (its PID now belongs to another)
    keeper_pid: int | None
    keeper_is_broker: bool  # keeper_pid is a connection broker: it closed the tunnel and keeps running
    removed: list[str]  # which stale files were removed
    log: str | None  # the service's log, None when removed
    logs_removed: list[str]  # paths of the logs removed (the service's on its host, the keeper's here)
    timeout: float


def stop(config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
         timeout: float = STOP_TIMEOUT, keep_log: bool = False, progress: Progress | None = None,
         prompt: Prompt | None = None, accept_new_host_key: bool = False) -> StopResult:
    """Stop the service and its tunnel keeper, remove server and client state, and, unless `keep_log`,
    the key's logs (the service's `<key>.log` and the keeper's): a stopped key leaves nothing behind.

    A status file is re-read while it is not parsable (`Service.read_status`), so
    a service caught rewriting it in place is still stopped.
    """
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    cpath = statefiles.client_file(key, connection_dir, local_service=not config.remote)
    keeper_pid, by_broker = end_tunnel(key, connection_dir, timeout)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    logs_removed: list[str] = []
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, key)
        raw = service.read_status()
        before = server_entry(host, key, service.status_file, raw, service.log_file)
        pid = before["pid"]
        refused = before["detail"] if before["status"] == STALE and pid is not None and before["detail"] and \
            before["job"] is None and "rhl-stop" not in before["detail"] and \
            host.process_start_time(pid) is not None else None  # a job's PID is on its node, not here
        stopped = _stop_recorded(service, raw, timeout, progress)
        stopped += [{"pid": pid, "signal": signal_used} for pid, signal_used in service.stop_unrecorded(timeout)]
        removed = _remove_server_state(service)
        successor = service.next_run()  # a walltime renewal's job that its tunnel's holder left behind
        if (leftover := successor.read_status()) is not None:
            stopped += _stop_recorded(successor, leftover, timeout, progress)
            removed += [f"successor's {what}" for what in _remove_server_state(successor)]
        if not keep_log and refused is None and host.mtime(service.log_file) is not None:
            # Only ours, never a `log` path from the status file; kept while an unverified process may write it.
            host.remove(service.log_file)
            logs_removed.append(service.log_file)
    if statefiles.read_bytes(cpath) is not None:
        statefiles.remove(cpath)
        removed.append("client file")
    keeper_log = keeper_log_path(os.path.join(statefiles.client_dir(connection_dir), f"{key}.json"))
    if not keep_log and os.path.exists(keeper_log):
        try:
            statefiles.remove(keeper_log)
            logs_removed.append(str(keeper_log))
        except OSError:  # Windows: a keeper that would not stop still holds it open
            pass
    return {
        "key": key,
        "host": before["host"],
        "status_before": before["status"],
        "stopped": bool(stopped),
        "processes": stopped,
        "refused": refused,
        "keeper_pid": keeper_pid,
        "keeper_is_broker": by_broker,
        "removed": removed,
        "log": None if service.log_file in logs_removed else before["log"],
        "logs_removed": logs_removed,
        "timeout": timeout,
    }


def _stop_recorded(service: Service, raw: bytes | None, timeout: float, progress: Progress) -> list[StoppedProcess]:
    """Stop the process (or cancel the job) the status record names; a launch racing with us rewrites the
    record, so the one it names next is stopped too, up to RACING_RELAUNCHES records."""
    host = service.host
    stopped: list[StoppedProcess] = []
    for _ in range(RACING_RELAUNCHES):
        state = classify(host, raw, service.status_file)[1]
        job = job_of(state)
        if state is None or (state.pid is None and job is None) \
                or any((s.get("job_id"), s["pid"]) == (job and job.id, state.pid) for s in stopped):
            break
        if state.status == STALE and state.start_time is None:
            break  # rhl-stop stopped that PID already; without a start time, a live one may be another's
        progress.phase(f"cancelling job {job.id} on {host.name}" if job else
                       f"stopping process group {state.pid} on {host.name}")
        signal_used = service.terminate(state, timeout)
        if signal_used is None:
            break
        entry: StoppedProcess = {"pid": state.pid, "signal": signal_used}
        if job is not None:
            entry["job_id"] = job.id
        stopped.append(entry)
        raw = service.read_status()
    return stopped


def _remove_server_state(service: Service) -> list[str]:
    """Remove the key's status file, lock and job script on its host; which of them were there."""
    removed = []
    for path, what in ((service.status_file, "status file"), (service.lock_file, "lock file"),
                       (service.job_file, "job script")):
        present = service.host.read(path) is not None
        if present or path == service.status_file:  # a dangling symbolic link reads as absent
            service.host.remove(path)
        if present:
            removed.append(what)
    return removed


def stop_holder(owner: LockOwner, key: str, timeout: float = STOP_TIMEOUT) -> bool | None:
    """End the tunnel of `key` that the lock's holder keeps: a keeper process is stopped (`stop_owner`, True
    once it is gone); a broker is asked to end that tunnel alone (None), never signalled: its other tunnels
    go on."""
    broker = owner.data.get("broker")
    if isinstance(broker, str) and is_keeper(owner, key):
        from ..broker.client import stop_tunnel

        stop_tunnel(broker, key)  # it removes that tunnel's client file and lock itself
        return None
    return stop_owner(owner, key, timeout)


def stop_keeper(key: str, connection_dir: str | os.PathLike[str] | None = None,
                timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop whatever keeps the tunnel of `key` (found through its lock); its PID, or None when none ran."""
    return end_tunnel(key, connection_dir, timeout)[0]


def end_tunnel(key: str, connection_dir: str | os.PathLike[str] | None = None,
               timeout: float = STOP_TIMEOUT) -> tuple[int | None, bool]:
    """End the tunnel of `key`: the PID of what kept it (None when nothing did), and whether that was a
    connection broker (which goes on keeping other tunnels) rather than a keeper process (stopped).

    The keeper removes its client file and lock itself; when it had to be
    killed, both are removed here (the client file only if it names that keeper).
    """
    client_path = Path(statefiles.client_dir(connection_dir), f"{key}.json")
    lock = KeeperLock(client_path, key)
    raw, owner = lock.read()
    if owner is None or not is_keeper(owner, key):
        lock.break_if_gone(raw)  # a dead keeper's or broker's: a stopped key leaves no files
        return None, False
    if stop_holder(owner, key, timeout) is None:
        return owner.pid, True  # a broker: it ended that tunnel and removed its files
    payload = statefiles.read_payload(client_path)
    if payload is not None and payload.get("keeper_pid") == owner.pid:
        statefiles.remove(client_path)
    lock.break_if_gone(raw)
    return owner.pid, False
