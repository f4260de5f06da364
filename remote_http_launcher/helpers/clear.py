"""rhl-clear: empty a persistent service's directory (Seamless's buffer or database directory): every entry
below it goes except hidden directories (a service's own bookkeeping), and the directory itself stays."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import checked_dir, die, run

PROG = "rhl-clear"
USAGE = "rhl-clear <path>"
DESCRIPTION = "Remove all direct files, symlinks, and directories below an absolute validated directory."


def _is_kept(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and path.name.startswith(".")


def _remove(path: Path) -> bool:
    """Remove path (a directory: all but hidden directories within); False when some of it was kept."""
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return True
    whole = True
    for child in path.iterdir():
        whole = not _is_kept(child) and _remove(child) and whole
    if whole:
        path.rmdir()
    return whole


def main(args: list[str]) -> int:
    if len(args) != 1:
        die(PROG, "exactly one path is required")
    path = checked_dir(PROG, args[0])
    if not path.exists():
        die(PROG, f"path does not exist: {path}")
    if not path.is_dir():
        die(PROG, f"not a directory: {path}")
    removed = errors = 0
    for child in sorted(path.iterdir()):
        if _is_kept(child):
            continue
        try:
            removed += _remove(child)
        except OSError as exc:
            print(f"{PROG}: could not remove {child}: {exc}", file=sys.stderr)
            errors += 1
    print(f"removed {removed} item(s) from {path}")
    return 1 if errors else 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
