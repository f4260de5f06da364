"""Managing services that were launched: status, stop, logs and list, as data.

The CLI turns these results into text (render.py); the API returns them as
they are. Everything here talks to the service's host through the `Host` interface only,
so the same code serves local and SSH configs. Client-side state (connection
files, tunnel keepers) is always on this machine.

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

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypedDict

from . import statefiles
from .clientfile import keeper_log_path
from .config import Config, evaluate_key
from .connect import open_host
from .errors import NotRunningError
from .hosts import Host
from .hosts.base import SeenProcess
from .keeper.lock import KeeperLock, is_keeper
from .keeper.stop import stop_keeper
from .progress import Progress
from .prompts import Prompt
from .service import STOP_TIMEOUT, Service, identity_problem, is_ours, job_of
from .statefiles import ServerState

if TYPE_CHECKING:
    from . import schedulers

ABSENT, STARTING, RUNNING, FAILED, STALE, QUEUED = "absent", "starting", "running", "failed", "stale", "queued"
VERIFIED, NOT_ITS_PORT, UNVERIFIED = "verified", "not the service's", "unverified"
DEFAULT_TAIL = 50
FOLLOW_INTERVAL = 0.25
ALIVE_CHECK_INTERVAL = 1.0
READ_CHUNK = 64 * 1024


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


class StatusResult(ServiceEntry):
    client: ClientSide
    # Without a handshake, who listens on `port` of a running service: VERIFIED (its process group),
    # NOT_ITS_PORT (another process), UNVERIFIED (the host cannot tell: no /proc); None with a handshake.
    port_listener: str | None


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
    removed: list[str]  # which stale files were removed
    log: str | None  # the service's log, None when removed
    logs_removed: list[str]  # paths of the logs removed (the service's on its host, the keeper's here)
    timeout: float


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
    from . import schedulers  # imported already: `job` came from it

    info = job.query(host)
    if info.state == schedulers.QUEUED:
        return QUEUED, state, info.reason, info
    if info.state == schedulers.RUNNING:
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
    return (state.status, state, None) if problem is None else (STALE, state, problem)


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
    }


# ---------------------------------------------------------------- status


def status(config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
           progress: Progress | None = None, prompt: Prompt | None = None,
           accept_new_host_key: bool = False) -> StatusResult:
    """The service's status on its host plus the client side; connects to the host (`accept_new_host_key`:
    as for `run()`, here and below)."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    cpath = statefiles.client_file(key, connection_dir, local_service=not config.remote)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, key)
        raw, seen = service.read_status_seen()
        entry = server_entry(host, key, service.status_file, raw, service.log_file, seen)
        if entry["workdir"] is None:
            entry["workdir"] = host.expand(config.workdir)
        listener = port_listener(host, entry) if config.handshake is None else None
    return {**entry, "client": client_entry(cpath, key, config.tunnel), "port_listener": listener}


def port_listener(host: Host, entry: ServiceEntry) -> str | None:
    """Who listens on a running service's port (see StatusResult); None when it is not running."""
    if entry["status"] != RUNNING or entry["pid"] is None or entry["port"] is None:
        return None
    if entry["job"] is not None:
        return UNVERIFIED  # its processes are on the job's node, not on the login node
    listens = host.listens(entry["pid"], entry["port"])
    return UNVERIFIED if listens is None else VERIFIED if listens else NOT_ITS_PORT


# ---------------------------------------------------------------- stop


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
    keeper_pid = stop_keeper(key, connection_dir, timeout)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    stopped: list[StoppedProcess] = []
    removed: list[str] = []
    logs_removed: list[str] = []
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, key)
        raw = service.read_status()
        before = server_entry(host, key, service.status_file, raw, service.log_file)
        pid = before["pid"]
        refused = before["detail"] if before["status"] == STALE and pid is not None and before["detail"] and \
            before["job"] is None and "rhl-stop" not in before["detail"] and \
            host.process_start_time(pid) is not None else None  # a job's PID is on its node, not here
        for _ in range(3):  # a relaunch racing with us rewrites the file: stop that process too
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
        stopped += [{"pid": pid, "signal": signal_used} for pid, signal_used in service.stop_unrecorded(timeout)]
        for path, what in ((service.status_file, "status file"), (service.lock_file, "lock file"),
                           (service.job_file, "job script")):
            present = host.read(path) is not None
            if present or path == service.status_file:  # a dangling symbolic link reads as absent
                host.remove(path)
            if present:
                removed.append(what)
        if not keep_log and refused is None and host.mtime(service.log_file) is not None:
            # Only ours, never a `log` path from the status file; kept while an unverified process may write it.
            host.remove(service.log_file)
            logs_removed.append(service.log_file)
    if statefiles.read_bytes(cpath) is not None:
        statefiles.remove(cpath)
        removed.append("client file")
    keeper_log = keeper_log_path(statefiles.client_dir(connection_dir) / f"{key}.json")
    if not keep_log and keeper_log.exists():
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
        "removed": removed,
        "log": None if service.log_file in logs_removed else before["log"],
        "logs_removed": logs_removed,
        "timeout": timeout,
    }


# ---------------------------------------------------------------- logs


def read_tail(host: Host, path: str, lines: int) -> tuple[bytes, int] | None:
    """The last `lines` lines of a file and the offset of its end; None when absent.

    Reads backwards in growing chunks, so a long log over SFTP costs little.
    """
    chunk = READ_CHUNK
    while True:
        result = host.read_from(path, -chunk)
        if result is None:
            return None
        data, end = result
        body = data[:-1] if data.endswith(b"\n") else data
        parts = body.split(b"\n")
        # Unless the chunk starts the file, its first line may be partial: need one more.
        if len(parts) > lines or len(data) >= end:
            break
        chunk *= 4
    if lines <= 0 or not data:
        return b"", end
    text = b"\n".join(parts[-lines:])
    return (text + b"\n" if data.endswith(b"\n") else text), end


def follow_file(host: Host, path: str, offset: int, alive: Callable[[], bool],
           interval: float = FOLLOW_INTERVAL) -> Iterator[bytes]:
    """New bytes of a growing file until `alive()` turns false (one last read after that)."""
    last_check = time.monotonic()
    running = True
    while True:
        result = host.read_from(path, offset)
        if result is not None:
            data, end = result
            if end < offset:  # truncated (a relaunch starts a fresh log): start over
                offset = 0
                continue
            if data:
                yield data
            offset = end
        if not running:
            return
        if time.monotonic() - last_check >= ALIVE_CHECK_INTERVAL:
            running = alive()
            last_check = time.monotonic()
            if not running:
                continue  # one last read
        time.sleep(max(interval, host.poll_interval))


class LogsResult(NamedTuple):
    """What `logs` read, and whether the service was running when it finished (`logs` exits 3 if not)."""

    text: str
    running: bool


def logs(config: Config, *, tail: int = DEFAULT_TAIL, prompt: Prompt | None = None) -> str:
    """The last `tail` lines of the service log."""
    return read_logs(config, tail=tail, prompt=prompt).text


def read_logs(config: Config, *, tail: int = DEFAULT_TAIL, output: BinaryIO | None = None, follow: bool = False,
              progress: Progress | None = None, prompt: Prompt | None = None,
              accept_new_host_key: bool = False) -> LogsResult:
    """The last `tail` lines of the service log, also written to `output` when given, and whether the
    service runs.

    With `follow`, new output is then written to `output` as it arrives, until
    the service's process ends (or KeyboardInterrupt).
    """
    progress = progress or Progress.silent()
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, evaluate_key(config))
        status_now, state, _detail = classify(host, service.read_status(), service.status_file)
        path = state.log if state and state.log else service.log_file
        result = read_tail(host, path, tail)
        if result is None:
            raise NotRunningError(f"{service.key}: no log at {path} on {host.name}; the service has not been "
                                  "launched there, or 'stop' removed its log ('stop --keep-log' keeps it); start "
                                  "it with 'remote-http-launcher CONFIG'", key=service.key,
                                  host=host.name, step="logs")
        text, end = result
        progress.close()
        running = state is not None and status_now in (RUNNING, STARTING)
        if output is not None:
            output.write(text)
            output.flush()
            if follow and running and state is not None:
                for chunk in follow_file(host, path, end, lambda: service.is_ours(state)):
                    output.write(chunk)
                    output.flush()
                running = False  # the follow ends when the service's process does
    return LogsResult(text.decode(errors="replace"), running)


# ---------------------------------------------------------------- list


def list_services(host: Host) -> list[ServiceEntry]:
    """Every service with a status file in the host's state directory."""
    entries = []
    state_dir = host.state_dir
    for name in host.listdir(state_dir):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        key = name[: -len(".json")]
        path = f"{state_dir}/{name}"
        raw = host.read(path)
        if raw is None:  # removed while listing
            continue
        entries.append(server_entry(host, key, path, raw, f"{state_dir}/{key}.log"))
    return entries
