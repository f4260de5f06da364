"""rhl-rm: remove keys' state files, the connection file (--client) and/or the status file (--server);
logs stay."""

from __future__ import annotations

from .. import statefiles
from .common import checked_key, client_dir, die, run, server_dir

PROG = "rhl-rm"
USAGE = "rhl-rm <key> [<key>...] [--client] [--server]"
DESCRIPTION = """Remove client and/or server state JSON files.

For non-persistent services, removing server JSON discards the key-to-log handle
used by rhl-logs. Read logs before rhl-rm when using the stale post-mortem
window. Log files remain on disk and are normally overwritten on the next launch
with the same key."""
SIDES = ("--client", "--server")


def main(args: list[str]) -> int:
    flags = {arg for arg in args if arg.startswith("--")}
    unknown = flags - set(SIDES)
    if unknown:
        die(PROG, f"unknown flag(s): {' '.join(sorted(unknown))}")
    keys = [checked_key(PROG, arg) for arg in args if not arg.startswith("--")]
    if not keys:
        die(PROG, "at least one key is required")
    sides = zip(SIDES, (client_dir, server_dir), strict=True)
    directories = [side() for flag, side in sides if not flags or flag in flags]
    for key in keys:
        removed = False
        for directory in directories:
            path = directory / f"{key}.json"
            if not path.exists():
                continue
            try:
                statefiles.remove(path)
            except OSError as exc:
                die(PROG, f"could not remove {path}: {exc}")
            print(f"removed {path}")
            removed = True
        if not removed:
            print(f"{key}: not found")
    return 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
