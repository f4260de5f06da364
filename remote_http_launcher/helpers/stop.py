"""rhl-stop: stop keys' services and keep their status files, marked `stale` (rhl-logs and rhl-inspect still
find them; rhl-rm removes them). A process is signalled only when it is verifiably the launched one, as
`stop` does (service.terminate: its process group, TERM then KILL); a reused PID is left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import statefiles
from .common import checked_key, die, read_record, run, server_dir

PROG = "rhl-stop"
USAGE = "rhl-stop <key> [<key>...]"
DESCRIPTION = """Stop services by key without deleting state JSON files.

Missing state is reported on stdout and exits 0. Invalid PID, malformed JSON,
and permission errors exit non-zero."""
STOP_WAIT = 5.0  # seconds after TERM before KILL, as 0.4.5 waits
#: What service.terminate's answer means, in 0.4.5's words.
OUTCOMES = {None: "already gone", "TERM": "stopped", "CANCEL": "stopped", "KILL": "kill required"}
STALE = "stale"


def _stop(key: str, path: Path, data: dict[str, Any]) -> str:
    from ..hosts.local import LocalHost
    from ..service import terminate
    from ..statefiles import ServerState

    pid = data.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        die(PROG, f"{key}: invalid PID")
    state = ServerState.parse(data) or ServerState(STALE, pid, None, None, None, data)
    try:
        signalled = terminate(LocalHost(), state, STOP_WAIT, str(path))
    except PermissionError:
        return "permission denied"
    return OUTCOMES.get(signalled, "stopped")


def main(args: list[str]) -> int:
    if not args:
        die(PROG, "at least one key is required")
    keys = [checked_key(PROG, key) for key in args]
    directory = server_dir()
    code = 0
    for key in keys:
        path = directory / f"{key}.json"
        data = read_record(PROG, path)
        if data is None:
            print(f"{key}: missing state")
            continue
        outcome = _stop(key, path, data)
        if outcome == "permission denied":
            code = 1
        else:
            try:
                statefiles.write_atomic(path, statefiles.encode(dict(data, status=STALE)))
            except OSError as exc:
                die(PROG, f"could not mark {key} stale: {exc}")
        print(f"{key}: {outcome}")
    return code


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
