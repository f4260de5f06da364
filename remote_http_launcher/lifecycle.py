"""Managing services that were launched: status, stop, logs and list.

Everything here talks to the service's host through the `Host` interface only,
so the same code serves local and SSH configs. Client-side state (connection
files, tunnel keepers) is always on this machine.

Statuses:
  absent    no server status file
  starting  status file says starting and its process is ours and alive
  running   status file says running and its process is ours and alive
  failed    the service reported "failed"
  stale     status file present, but its process is gone (or its PID now
            belongs to another process), or the file is unreadable
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from . import keeperlock, processes, statefiles
from .config import SSH_HOST_PATTERN, Config
from .errors import EXIT_NOT_RUNNING, ConfigError, HostError, LauncherError
from .hosts import Host, LocalHost, open_host
from .launcher import Service, client_file, evaluate_key
from .progress import Progress
from .statefiles import ServerState

ABSENT, STARTING, RUNNING, FAILED, STALE = "absent", "starting", "running", "failed", "stale"
DEFAULT_TAIL = 50
FOLLOW_INTERVAL = 0.25
ALIVE_CHECK_INTERVAL = 1.0
READ_CHUNK = 64 * 1024



class NotRunningError(LauncherError):
    """The service is not running, so there is nothing to show (exit code 3)."""

    exit_code = EXIT_NOT_RUNNING


# ---------------------------------------------------------------- server side


def classify(host: Host, raw: bytes | None) -> tuple[str, ServerState | None, str | None]:
    """(status, parsed state, why it is stale) of a status file's contents."""
    if raw is None:
        return ABSENT, None, None
    state = ServerState.parse(statefiles.decode(raw))
    if state is None:
        return STALE, None, "the status file is not a valid status record"
    if state.status == FAILED:
        return FAILED, state, None
    if processes.is_ours(host, state):
        return state.status, state, None
    if state.pid is None:
        return STALE, state, "the status file names no process"
    if host.process_start_time(state.pid) is not None:
        return STALE, state, f"PID {state.pid} now belongs to another process"
    return STALE, state, f"process {state.pid} is gone"


def server_entry(host: Host, key: str, status_file: str, raw: bytes | None,
                 default_log: str | None = None) -> dict[str, Any]:
    """What the status file of `key` says, checked against the host's processes."""
    status, state, detail = classify(host, raw)
    data = state.data if state else (statefiles.decode(raw) or {})
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
        "uptime": age if status in (RUNNING, STARTING) else None,
        "workdir": workdir if isinstance(workdir, str) else None,
        "log": log or default_log,
        "status_file": status_file,
    }


def _service(config: Config, host: Host) -> Service:
    return Service(host, config, evaluate_key(config))


# ---------------------------------------------------------------- client side


def client_entry(path: Path, key: str) -> dict[str, Any]:
    """The connection file and the tunnel keeper (found through its lock, whose PID is verified)."""
    raw = statefiles.read_bytes(path)
    payload = statefiles.decode(raw)
    owner = keeperlock.KeeperLock(path, key).read()[1]
    return {
        "connection_file": str(path),
        "present": raw is not None,
        "valid": payload is not None,
        "hostname": (payload or {}).get("hostname"),
        "port": (payload or {}).get("port"),
        "tunnel": owner is not None or "tunneled-port" in (payload or {}),
        "keeper_pid": owner.pid if owner else None,
        "keeper_alive": owner.is_keeper(key) if owner else None,
    }


# ---------------------------------------------------------------- status


def status(config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """The service's status on its host plus the client side; connects to the host."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    cpath = client_file(config, key, connection_dir)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config) as host:
        service = Service(host, config, key)
        entry = server_entry(host, key, service.status_file, host.read(service.status_file), service.log_file)
        if entry["workdir"] is None:
            entry["workdir"] = host.expand(config.workdir)
    entry["client"] = client_entry(cpath, key)
    return entry


# ---------------------------------------------------------------- stop


def stop(config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
         timeout: float = processes.STOP_TIMEOUT, progress: Progress | None = None) -> dict[str, Any]:
    """Stop the service and its tunnel keeper, remove server and client state, keep the log."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    cpath = client_file(config, key, connection_dir)
    keeper_pid = keeperlock.stop_keeper(key, connection_dir, timeout)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    stopped: list[dict[str, Any]] = []
    removed: list[str] = []
    with open_host(config) as host:
        service = Service(host, config, key)
        raw = host.read(service.status_file)
        before = server_entry(host, key, service.status_file, raw, service.log_file)
        refused = before["detail"] if before["detail"] and "another process" in before["detail"] else None
        for _ in range(3):  # a relaunch racing with us rewrites the file: stop that process too
            state = classify(host, raw)[1]
            if state is None or state.pid is None or any(s["pid"] == state.pid for s in stopped):
                break
            progress.phase(f"stopping process group {state.pid} on {host.name}")
            signal_used = processes.terminate(host, state, timeout)
            if signal_used is None:
                break
            stopped.append({"pid": state.pid, "signal": signal_used})
            raw = host.read(service.status_file)
        for path, what in ((service.status_file, "status file"), (service.lock_file, "lock file")):
            if host.read(path) is not None:
                host.remove(path)
                removed.append(what)
    if statefiles.read_bytes(cpath) is not None:
        statefiles.remove(cpath)
        removed.append("client file")
    if stopped:
        how = ", ".join(f"pid {s['pid']}" + (" with SIGTERM" if s["signal"] == "TERM" else
                        f": no exit within {timeout:g} s of SIGTERM, killed with SIGKILL") for s in stopped)
        message = f"stopped {key} on {before['host']} ({how})"
    else:
        message = "not running; nothing to stop"
        notes = []
        if refused:
            notes.append(f"{refused}; left it alone")
        if removed:
            notes.append("removed stale " + ", ".join(removed))
        if notes:
            message += " (" + "; ".join(notes) + ")"
    if keeper_pid is not None:
        message += f"; tunnel keeper {keeper_pid} stopped"
    return {
        "key": key,
        "host": before["host"],
        "status_before": before["status"],
        "stopped": bool(stopped),
        "processes": stopped,
        "refused": refused,
        "keeper_pid": keeper_pid,
        "removed": removed,
        "log": before["log"],
        "message": message,
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


def logs(config: Config, *, tail: int = DEFAULT_TAIL, output: BinaryIO | None = None, follow: bool = False,
         progress: Progress | None = None) -> str:
    """The last `tail` lines of the service log, also written to `output` when given.

    With `follow`, new output is then written to `output` as it arrives, until
    the service's process ends (or KeyboardInterrupt).
    """
    progress = progress or Progress.silent()
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config) as host:
        service = _service(config, host)
        status_now, state, _detail = classify(host, host.read(service.status_file))
        path = state.log if state and state.log else service.log_file
        result = read_tail(host, path, tail)
        if result is None:
            raise NotRunningError(f"{service.key}: no log at {path} on {host.name}; the service has not been "
                                  f"launched there (start it with 'remote-http-launcher CONFIG')")
        text, end = result
        progress.close()
        if output is not None:
            output.write(text)
            output.flush()
            if follow and state is not None and status_now in (RUNNING, STARTING):
                for chunk in follow_file(host, path, end, lambda: processes.is_ours(host, state)):
                    output.write(chunk)
                    output.flush()
    return text.decode(errors="replace")


# ---------------------------------------------------------------- list


def open_target(target: str | None) -> Host:
    """This machine, or an SSH host named like `ssh_hostname` (user@host or an ~/.ssh/config alias)."""
    if target is None:
        return LocalHost()
    if not re.fullmatch(SSH_HOST_PATTERN, target):  # what ssh_hostname accepts in a config
        raise ConfigError(f"--host: {target[:80]!r} is not an SSH host name (use HOST, USER@HOST or an "
                          "alias from ~/.ssh/config)")
    try:
        from .hosts.ssh import SSHHost
    except ImportError as exc:
        raise HostError(f"SSH support is not available ({exc}); reinstall remote-http-launcher") from exc
    return SSHHost.connect(target)


def list_services(host: Host) -> list[dict[str, Any]]:
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


# ---------------------------------------------------------------- text output


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status(entry: dict[str, Any]) -> str:
    status_now = entry["status"]
    head = f"{entry['key']} on {entry['host']}: {status_now}"
    if entry["detail"]:
        head += f" ({entry['detail']})"
    rows = [
        ("pid", entry["pid"]),
        ("port", entry["port"]),
        ("uptime" if entry["uptime"] is not None else "age",
         format_duration(entry["uptime"] if entry["uptime"] is not None else entry["age"])),
        ("workdir", entry["workdir"]),
        ("log", entry["log"]),
        ("status file", entry["status_file"] if status_now != ABSENT else f"{entry['status_file']} (absent)"),
    ]
    client = entry["client"]
    if client["present"]:
        where = f"{client['hostname']}:{client['port']}" if client["valid"] else "unreadable"
        rows.append(("client file", f"{client['connection_file']} ({where})"))
    else:
        rows.append(("client file", f"{client['connection_file']} (absent)"))
    if client["keeper_pid"] is not None:
        rows.append(("tunnel keeper", f"pid {client['keeper_pid']} "
                                      f"({'alive' if client['keeper_alive'] else 'not running'})"))
    lines = [head] + [f"  {name:<14}{'-' if value is None else value}" for name, value in rows]
    hint = {
        ABSENT: "start it with 'remote-http-launcher CONFIG'",
        STALE: "clean up with 'remote-http-launcher stop CONFIG', or relaunch with 'remote-http-launcher CONFIG'",
        FAILED: "see why with 'remote-http-launcher logs CONFIG'; relaunch with 'remote-http-launcher CONFIG'",
        STARTING: "wait for it with 'remote-http-launcher CONFIG'",
    }.get(status_now)
    if hint:
        lines.append(f"  {'next':<14}{hint}")
    return "\n".join(lines)


def format_list(host_name: str, entries: list[dict[str, Any]]) -> str:
    if not entries:
        return f"no services on {host_name}"
    header = ("KEY", "STATUS", "PID", "PORT", "AGE")
    rows = [(e["key"], e["status"] + (" !" if e["status"] == STALE else ""), str(e["pid"] or "-"),
             str(e["port"] or "-"), format_duration(e["age"])) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    stale = sum(e["status"] == STALE for e in entries)
    if stale:
        lines.append(f"{stale} stale (!): process gone; 'remote-http-launcher stop CONFIG' removes the state")
    return "\n".join(lines)
