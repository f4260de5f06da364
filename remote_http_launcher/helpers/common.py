"""What the rhl-* helpers share: where a key's files are, its checks, and 0.4.5's output conventions."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import statefiles
from ..errors import LauncherError

KEY_PATTERN = re.compile(r"[a-zA-Z0-9._-]+")  # 0.4.5's: a key names files, so no separators
#: Directories rhl-clear and rhl-ps-persistent never operate on.
SYSTEM_DIRS = frozenset({"/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/sys", "/proc", "/run",
                         "/var", "/opt"})
RUNTIME_ERROR = 1  # 0.4.5's for every failure, usage errors included: Seamless relays it


def die(prog: str, message: str, code: int = RUNTIME_ERROR) -> NoReturn:
    """One line on stderr, then exit (as 0.4.5 does)."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(prog: str, usage: str, description: str, main: Callable[[list[str]], int | None],
        argv: Sequence[str] | None = None) -> None:
    """Entry point: `-h`/`--help` as 0.4.5 prints it; a LauncherError (an untrusted directory) as one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(f"usage: {usage}\n\n{description}")
        raise SystemExit(0)
    try:
        code = main(args)
    except LauncherError as exc:
        die(prog, str(exc))
    raise SystemExit(code or 0)


def int_flag(prog: str, args: list[str], flag: str) -> int | None:
    """Remove `flag N` from args; N, or None when the flag is absent."""
    if flag not in args:
        return None
    index = args.index(flag)
    try:
        value = int(args[index + 1])
    except (IndexError, ValueError):
        die(prog, f"{flag} requires an integer")
    del args[index:index + 2]
    return value


def checked_key(prog: str, key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        die(prog, f"invalid key {key!r} (only letters, digits, . _ - allowed)")
    return key


def server_dir() -> Path:
    """The server directory, refused when another user could control it (its files name PIDs to signal)."""
    directory = statefiles.local_server_dir()
    if os.path.exists(directory):
        statefiles.check_trusted(directory, "server directory")
    return Path(directory)


def client_dir() -> Path:
    directory = statefiles.client_dir()
    if os.path.exists(directory):
        statefiles.check_trusted(directory, "client directory")
    return Path(directory)


def state_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def read_record(prog: str, path: Path) -> dict[str, Any] | None:
    """A state file's JSON object; None when absent; malformed or not an object exits 1, naming the file."""
    try:
        raw = statefiles.read_bytes(path)
    except OSError as exc:
        die(prog, f"could not read {path}: {exc}")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        die(prog, f"malformed JSON in {path}: {exc}; remove it with rhl-rm")
    if not isinstance(data, dict):
        die(prog, f"state file must contain a JSON object: {path}")
    return data


def checked_dir(prog: str, path: str) -> Path:
    """An absolute path without `..` that is not a system directory (rhl-clear, rhl-ps-persistent)."""
    directory = Path(path).expanduser()
    if not directory.is_absolute():
        die(prog, f"path must be absolute: {path!r}")
    if ".." in directory.parts:
        die(prog, f"path must not contain '..': {path!r}")
    try:
        resolved = directory.resolve()
    except OSError:
        resolved = directory
    if {str(resolved), str(directory)} & SYSTEM_DIRS:
        die(prog, f"refusing to operate on system directory: {path!r}")
    return directory


def emit_ndjson(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        print(json.dumps(row, sort_keys=True))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Columns padded to their widest cell; an empty or missing value shows as `-`."""
    rendered = [["-" if value is None or value == "" else str(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[index]) for row in rendered]) for index, header in enumerate(headers)]
    print(" ".join(header.ljust(widths[index]) for index, header in enumerate(headers)))
    for row in rendered:
        print(" ".join(cell.ljust(widths[index]) for index, cell in enumerate(row)))
