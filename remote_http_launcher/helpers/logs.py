"""rhl-logs: the service log of a key (`<server dir>/<key>.log`, where the service's output goes), whole or
its last lines; readable after rhl-stop, until rhl-rm or the next launch."""

from __future__ import annotations

import sys

from .common import checked_key, die, int_flag, run, server_dir

PROG = "rhl-logs"
USAGE = "rhl-logs <key> [--tail N]"
DESCRIPTION = ("Print service logs. During the stale post-mortem window, read logs before rhl-rm removes the "
               "state handle.")


def main(args: list[str]) -> int:
    tail = int_flag(PROG, args, "--tail")
    if len(args) != 1:
        die(PROG, "exactly one key is required")
    key = checked_key(PROG, args[0])
    path = server_dir() / f"{key}.log"
    if tail is not None and tail < 0:
        die(PROG, "--tail must be >= 0")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        die(PROG, f"no log file for {key!r}")
    except OSError as exc:
        die(PROG, f"could not read {path}: {exc}")
    if tail is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail:] if tail else [])
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
