"""rhl-inspect: the status file of a key, pretty-printed (or, with --with-mtime, on one line with its
modification time)."""

from __future__ import annotations

import json

from .common import checked_key, die, read_record, run, server_dir

PROG = "rhl-inspect"
USAGE = "rhl-inspect <key> [--with-mtime]"
DESCRIPTION = "Pretty-print the server-side launcher state JSON for one key."


def main(args: list[str]) -> int:
    with_mtime = "--with-mtime" in args
    args = [arg for arg in args if arg != "--with-mtime"]
    if len(args) != 1:
        die(PROG, "exactly one key is required")
    key = checked_key(PROG, args[0])
    path = server_dir() / f"{key}.json"
    data = read_record(PROG, path)
    if data is None:
        die(PROG, f"no state file for {key!r}")
    if with_mtime:
        print(json.dumps({"mtime": path.stat().st_mtime, "data": data}, separators=(",", ":")))
    else:
        print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
