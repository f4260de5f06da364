"""What the commands report of a service: its status file checked against its host, and its client side.

Everything here talks to the service's host through the `Host` interface
only, so the same code serves local and SSH configs. Client-side state
(connection files, tunnel keepers) is always on this machine.

Statuses:
  absent    no server status file
  starting  status file says starting and its process is ours and alive
  running   status file says running and its process is ours and alive
  failed    the service reported "failed"
  stale     status file present, but its process is gone (or its PID now
            belongs to another process), or the file is unreadable, or the
            original's rhl-stop marked it "stale" (it stopped the process)
  queued    a batch job (`scheduler`) waiting in its scheduler's queue; `detail` is why
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .. import statefiles
from ..hosts import Host
from ..hosts.base import SeenProcess
from ..service import SUCCESSOR_OF, identity_problem, is_ours, job_of
from ..statefiles import ServerState
from ..stock import URL, URL_UNMATCHED
from ..tunnels.lock import KeeperLock, is_keeper, link_state

if TYPE_CHECKING:
    from .. import schedulers

ABSENT, STARTING, RUNNING, FAILED, STALE, QUEUED = "absent", "starting", "running", "failed", "stale", "queued"
FAILED_AT_LAUNCH = "failed at launch"  # how `detail` starts for a service whose process died while starting


class JobEntry(TypedDict):
    """A batch job as its scheduler describes it (`scheduler` configs)."""

    id: str
    scheduler: str
    state: str  # the scheduler's own word: PENDING, RUNNING, COMPLETED, ... (GONE: it no longer knows the job)
    node: str | None
    reason: str | None  # why it is queued
    time_left: str | None
    start_estimate: str | None


class ServiceEntry(TypedDict):
    """One service as its status file and the host's processes describe it (`list`, and `status`)."""

    key: str
    host: str
    status: str  # absent, queued, starting, running, failed or stale
    detail: str | None  # why it is stale
    pid: int | None
    port: int | None
    launched_at: float | None
    age: float | None
    uptime: float | None
    workdir: str | None
    log: str | None
    status_file: str
    meta: dict[str, Any] | None  # the config's `meta`, as the status file keeps it
    job: JobEntry | None  # a batch job's service; None for a process
    url: str | None  # what `url_pattern` found in the service's log (as the service printed it)
    url_pattern_matched: bool | None  # None: the launcher looked for no URL in this service's log


class ClientSide(TypedDict):
    """The client connection file and the tunnel keeper, on this machine."""

    connection_file: str
    present: bool
    valid: bool
    hostname: str | None
    port: int | None
    tunnel: bool
    keeper_pid: int | None
    keeper_alive: bool | None
    tunnel_up: bool | None  # None: the config asks for no tunnel; else whether a live keeper serves it
    link: str | None  # the live keeper's SSH link: "up", "reconnecting" or "waiting for login"; else None
    url: str | None  # the service's URL as this machine reaches it


# ---------------------------------------------------------------- server side


def classify(host: Host, raw: bytes | None, status_file: str | None = None,
             seen: SeenProcess | None = None) -> tuple[str, ServerState | None, str | None]:
    """(status, parsed state, why it is stale or queued) of a status file's contents (read from `status_file`;
    `seen`: as read with it, see Service.read_status_seen)."""
    status, state, detail, _ = _classify(host, raw, status_file, seen)
    return status, state, detail


def _classify(host: Host, raw: bytes | None, status_file: str | None = None, seen: SeenProcess | None = None
              ) -> tuple[str, ServerState | None, str | None, schedulers.JobInfo | None]:
    """classify(), and what the scheduler said about a batch job."""
    status, state, detail = _classify_process(host, raw, status_file, seen)
    job = job_of(state)
    if job is None or state is None or status in (FAILED, ABSENT) or state.status == STALE:
        return status, state, detail, None
    from .. import schedulers  # imported already: `job` came from it

    info = job.query(host)
    again = schedulers.moved(info, state.data)  # requeued since the record was written: it names a dead run
    if info.state == schedulers.QUEUED:
        reason = f"requeued, {info.reason or 'waiting'}" if again else info.reason
        if SUCCESSOR_OF in state.data:  # the job before it ended first (walltime renewal)
            reason = f"queued successor: {reason or 'waiting'}"
        return QUEUED, state, reason, info
    if info.state == schedulers.RUNNING:
        if again:
            return STARTING, state, f"job {job.id} was requeued and restarted on {info.node or 'a new node'}", info
        return state.status, state, None, info
    return STALE, state, f"job {job.id} has ended ({info.raw_state.lower()})", info


def _classify_process(host: Host, raw: bytes | None, status_file: str | None,
                      seen: SeenProcess | None) -> tuple[str, ServerState | None, str | None]:
    if raw is None:
        return ABSENT, None, None
    if statefiles.too_large(raw):
        return STALE, None, (f"the status file is larger than {statefiles.MAX_STATE_BYTES // 1024} KiB, so it is "
                             "not a status record; nothing it names is trusted or signalled")
    data = statefiles.decode(raw)
    state = ServerState.parse(data)
    if state is None:
        if data is not None and data.get("dry_run") is True:
            return STALE, None, "a record of the original's --dry-run; nothing was launched"
        return STALE, None, "the status file is not a valid status record"
    if state.status == FAILED:
        return FAILED, state, None
    if state.status == STALE:  # the original's rhl-stop stopped it and kept the file
        if state.start_time is not None and is_ours(host, state, status_file, seen):
            return STALE, state, f"marked stale (rhl-stop), but process {state.pid} still runs"
        return STALE, state, "stopped (marked stale by rhl-stop)"
    if job_of(state) is not None:
        return state.status, state, None  # _classify asks the scheduler
    problem = identity_problem(host, state, status_file, seen)
    if problem is None:
        return state.status, state, None
    if state.status == STARTING and problem == f"process {state.pid} is gone":
        problem = f"{FAILED_AT_LAUNCH}: process {state.pid} exited before reporting its port"
    return STALE, state, problem


def server_entry(host: Host, key: str, status_file: str, raw: bytes | None,
                 default_log: str | None = None, seen: SeenProcess | None = None) -> ServiceEntry:
    """What the status file of `key` says, checked against the host's processes."""
    status, state, detail, info = _classify(host, raw, status_file, seen)
    data = state.data if state else (statefiles.decode(raw) or {})
    job = job_of(state)
    launched_at = data.get("launched_at")
    if isinstance(launched_at, bool) or not isinstance(launched_at, (int, float)):
        launched_at = host.mtime(status_file) if raw is not None else None
    age = max(0.0, time.time() - launched_at) if launched_at is not None else None
    workdir = data.get("workdir")
    log = state.log if state and state.log else (data.get("log") if isinstance(data.get("log"), str) else None)
    return {
        "key": key,
        "host": host.name,
        "status": status,
        "detail": detail,
        "pid": state.pid if state else None,
        "port": state.port if state else None,
        "launched_at": launched_at,
        "age": age,
        "uptime": age if status in (RUNNING, STARTING, QUEUED) else None,
        "workdir": workdir if isinstance(workdir, str) else None,
        "log": log or default_log,
        "status_file": status_file,
        "meta": data["meta"] if isinstance(data.get("meta"), dict) else None,
        "job": None if job is None or info is None else {
            "id": job.id, "scheduler": job.scheduler.name, "state": info.raw_state,
            "node": info.node or (data["node"] if isinstance(data.get("node"), str) else None),
            "reason": info.reason, "time_left": info.time_left, "start_estimate": info.start_estimate},
        "url": data[URL] if isinstance(data.get(URL), str) else None,
        "url_pattern_matched": False if data.get(URL_UNMATCHED) is True else
        True if isinstance(data.get(URL), str) else None,
    }


# ---------------------------------------------------------------- client side


def client_entry(path: Path, key: str, tunnel: bool = False) -> ClientSide:
    """The connection file and the tunnel keeper (found through its lock, whose PID is verified);
    `tunnel`: the config asks for one."""
    raw = statefiles.read_bytes(path)
    payload = statefiles.decode(raw)
    owner = KeeperLock(path, key).read()[1]
    keeper_alive = is_keeper(owner, key) if owner else None
    return {
        "connection_file": str(path),
        "present": raw is not None,
        "valid": payload is not None,
        "hostname": (payload or {}).get("hostname"),
        "port": (payload or {}).get("port"),
        "tunnel": owner is not None or "tunneled-port" in (payload or {}),
        "keeper_pid": owner.pid if owner else None,
        "keeper_alive": keeper_alive,
        "tunnel_up": bool(keeper_alive) if tunnel else None,
        "link": None if owner is None or not keeper_alive else link_state(owner),
        "url": (payload or {}).get(URL) if isinstance((payload or {}).get(URL), str) else None,
    }


