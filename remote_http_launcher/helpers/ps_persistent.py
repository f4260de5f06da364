"""rhl-ps-persistent: whether persistent service directories (and, --level N, their subdirectories N deep) are
absent, empty or populated; --file names the file that makes one populated (a database), --marker the one a
service directory has (walked only where it is, and not counted as content)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from .common import checked_dir, die, emit_ndjson, int_flag, print_table, run

PROG = "rhl-ps-persistent"
USAGE = "rhl-ps-persistent <path> [<path>...] [--level N] [--file FILENAME] [--marker FILENAME] [--json]"
DESCRIPTION = "Walk absolute, validated paths and report absent, empty, or populated state."


def _name_flag(args: list[str], flag: str) -> str | None:
    if flag not in args:
        return None
    index = args.index(flag)
    name = args[index + 1] if index + 1 < len(args) else ""
    if "/" in name or name in ("", ".", ".."):
        die(PROG, f"{flag} requires a simple filename")
    del args[index:index + 2]
    return name


def _mtime(path: Path) -> str | None:
    try:
        return datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return None


def _row(path: Path, filename: str | None, marker: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path.as_posix(), "state": "absent", "size": None, "modified": None}
    if not path.exists():
        return row
    if not path.is_dir():
        die(PROG, f"not a directory: {path}")
    try:
        populated = (path / filename).exists() if filename else any(child.name != marker for child in path.iterdir())
    except OSError as exc:
        die(PROG, f"could not read {path}: {exc}")
    if not populated:
        return dict(row, state="empty")
    if filename:
        try:
            size = (path / filename).stat().st_size
        except OSError as exc:
            die(PROG, f"could not stat {path / filename}: {exc}")
        return dict(row, state="populated", size=size, modified=_mtime(path / filename))
    return dict(row, state="populated", modified=_mtime(path))


def _walk(root: Path, level: int, filename: str | None, marker: str | None) -> list[dict[str, Any]]:
    rows = [_row(root, filename, marker)] if marker is None or not root.exists() or (root / marker).exists() else []
    if level == 0 or not root.exists():
        return rows
    if not root.is_dir():
        die(PROG, f"not a directory: {root}")
    try:
        children = sorted(child for child in root.iterdir() if child.is_dir())
    except OSError as exc:
        die(PROG, f"could not read {root}: {exc}")
    for child in children:
        rows.extend(_walk(child, level - 1, filename, marker))
    return rows


def main(args: list[str]) -> int:
    json_mode = "--json" in args
    args = [arg for arg in args if arg != "--json"]
    level = int_flag(PROG, args, "--level") or 0
    if level < 0:
        die(PROG, "--level must be >= 0")
    filename = _name_flag(args, "--file")
    marker = _name_flag(args, "--marker")
    if not args:
        die(PROG, "at least one path is required")
    rows = [row for root in [checked_dir(PROG, arg) for arg in args] for row in _walk(root, level, filename, marker)]
    if json_mode:
        emit_ndjson(rows)
    else:
        print_table(("PATH", "STATE", "SIZE", "MODIFIED"),
                    ((row["path"], row["state"], row["size"], row["modified"]) for row in rows))
    return 0


def console_main() -> None:
    run(PROG, USAGE, DESCRIPTION, main)
