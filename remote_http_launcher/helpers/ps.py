"""rhl-ps: the launcher's state rows as 0.4.5 lists them; a server row's process is checked as `status` checks
it (PID and start time, or the original's command line), not only for being alive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import statefiles
from .common import client_dir, die, emit_ndjson, print_table, read_record, run, server_dir, state_files

PROG = "rhl-ps"
USAGE = "rhl-ps [--client] [--host SSH_HOST] [--status STATE] [--key] [--no-status] [--json]"
DESCRIPTION = """List known remote-http-launcher state rows.

Default mode reads server state. Use --client for client connection files.
--no-status skips server PID liveness probing."""
VALUED = ("--host", "--status")


def server_row(path: Path, *, check_pid: bool = True) -> dict[str, Any]:
    """The status file's fields, plus `key`, `json_status` (as written), `status` (`running` whose process is
    not the launched one becomes `stale`), `live` (None when not checked) and `meta`."""
    from ..commands.entries import classify
    from ..hosts.local import LocalHost

    data = read_record(PROG, path) or {}
    row = dict(data, key=path.stem)
    written = data.get("status")
    if written is not None:
        row["json_status"] = written
    pid = data.get("pid")
    status = written if isinstance(written, str) else "failed"
    live: bool | None = None
    unchecked = status == "failed" or data.get("dry_run") or (status == "starting" and pid is None)
    if check_pid and not unchecked:
        if pid is not None:
            live = classify(LocalHost(), statefiles.read_bytes(path), str(path))[0] != "stale"
        if status == "running" and not live:
            status = "stale"
    row["status"] = status
    row["live"] = live
    row.setdefault("meta", {})
    return row


def client_row(path: Path) -> dict[str, Any]:
    """The connection file's fields, plus `key`, `host`, `ssh_host` (where a tunnel goes, else the host) and
    `port`."""
    data = read_record(PROG, path) or {}
    row = dict(data, key=path.stem, host=data.get("hostname"), port=data.get("port"))
    row["ssh_host"] = data.get("tunneled-host") or data.get("ssh_hostname") or data.get("hostname")
    row.setdefault("meta", {})
    return row


def main(args: list[str]) -> int:
    flags: set[str] = set()
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in VALUED:
            if i + 1 >= len(args):
                die(PROG, f"{arg} requires a value")
            values[arg] = args[i + 1]
            i += 1
        elif arg in ("--client", "--json", "--key", "--no-status"):
            flags.add(arg)
        else:
            die(PROG, f"unknown argument: {arg}")
        i += 1
    use_client = "--client" in flags
    if "--host" in values and not use_client:
        die(PROG, "--host requires --client")
    if {"--key", "--json"} <= flags:
        die(PROG, "--key and --json are mutually exclusive")
    if use_client:
        rows = [client_row(path) for path in state_files(client_dir())]
    else:
        rows = [server_row(path, check_pid="--no-status" not in flags) for path in state_files(server_dir())]
    if "--host" in values:
        rows = [row for row in rows if row.get("ssh_host") == values["--host"]]
    if "--status" in values:
        rows = [row for row in rows if row.get("status") == values["--status"]]
    if "--key" in flags:
        for row in rows:
            print(row["key"])
    elif "--json" in flags:
        emit_ndjson(rows)
    elif use_client:
        print_table(("KEY", "SSH-HOST", "HOST", "PORT"),
                    ((row.get("key"), row.get("ssh_host"), row.get("host"), row.get("port")) for row in rows))
    else:
        print_table(("KEY", "STATUS", "PORT"), ((row.get("key"), row.get("status"), row.get("port")) for row in rows))
    return 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
