"""Where state lives and what it holds: client connection files and server status files.

Client files are always on this machine; server files live on the host that runs
the service and are reached through a `Host`. Both are JSON, written atomically
(temp file + rename) with mode 0600 in 0700 directories.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypedDict, TypeGuard, TypeVar, cast

from .errors import ConfigError, LauncherError

DIR_ENV = "REMOTE_HTTP_LAUNCHER_DIR"
DEFAULT_DIRNAME = ".remote-http-launcher"
REMOTE_STATE_DIR = "~/" + DEFAULT_DIRNAME + "/server"
FILE_MODE = 0o600
DIR_MODE = 0o700
WRITABLE_BY_OTHERS = 0o022
#: Statuses of a server status file. "stale" is written by the original 0.4's `rhl-stop` once it has
#: stopped the service (it keeps the file): a record of a process that is gone.
T = TypeVar("T")
SHARING_RETRIES = 8  # Windows sharing violations: waits of 5, 10, ... 640 ms, about 1.3 s in all
SHARING_FIRST_WAIT = 0.005
STATUSES = ("starting", "running", "failed", "stale")
#: State files are a few hundred bytes (file_parameters and meta add at most half of this: config.py). Reads
#: stop one byte past it, so a huge file (planted, or a service gone wrong) costs neither minutes over a slow
#: link nor memory, and a file that big counts as corrupt (`decode`).
MAX_STATE_BYTES = 1 << 20
READ_LIMIT = MAX_STATE_BYTES + 1

#: The client connection file: `hostname` and `port` always; the rest when they apply. Tunnels add the
#: `tunneled-*` fields and their keeper; every extra `*_port` the service reported is there too (as
#: `<name>` and, tunnelled, `tunneled-<name>`), which a TypedDict cannot list.
ClientPayload = TypedDict("ClientPayload", {
    "hostname": str,
    "port": int,
    "ssh_hostname": str,
    "parameters": dict[str, Any],
    "meta": dict[str, Any],
    "tunneled-host": str,
    "tunneled-port": int,
    "tunneled-network-interface": str,
    "keeper_pid": int,
    "keeper_log": str,
}, total=False)


def base_dir() -> Path:
    env = os.environ.get(DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / DEFAULT_DIRNAME


def client_dir(connection_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(connection_dir).expanduser() if connection_dir else base_dir() / "client"


def local_server_dir() -> Path:
    return base_dir() / "server"


def client_file(key: str, connection_dir: str | os.PathLike[str] | None, *, local_service: bool) -> Path:
    """`<client dir>/<key>.json`; for a local service the client and server directories must differ."""
    directory = client_dir(connection_dir)
    if local_service:
        check_distinct(directory, local_server_dir())
    check_trusted(directory, "client directory")
    return directory / f"{key}.json"


def check_trusted(path: Path, what: str) -> None:
    """Refuse state another user could control: a symbolic link, or a file or directory of another user,
    or one others may write. Whoever controls the client directory redirects our connections (the
    warm path trusts the port a client file names), so this runs on every path, the warm one included.
    POSIX only: on Windows the user's profile directory is private by default."""
    if sys.platform == "win32":
        return
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LauncherError(f"{what} {path}: {exc.strerror or exc}; use a directory of your own "
                            f"(--connection-dir or ${DIR_ENV})", step="state directory") from None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif hasattr(os, "geteuid") and info.st_uid != os.geteuid():  # a feature check: the POSIX-stripped test run
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & WRITABLE_BY_OTHERS:
        problem = f"may be written by other users (mode {info.st_mode & 0o777:o})"
    else:
        return
    raise LauncherError(f"{what} {path} {problem}, so another user could redirect your connections; remove it "
                        f"(it is made again, private) or use a directory of your own (--connection-dir or "
                        f"${DIR_ENV})", step="state directory")


def check_distinct(client: Path, server: Path) -> None:
    """Client and server files share names (`<key>.json`), so their directories must differ.

    Compared after resolving symlinks: a link to the server directory would let the
    client file overwrite the status file and lose the service's PID.
    """
    if os.path.realpath(client) == os.path.realpath(server):
        raise ConfigError(f"--connection-dir: {str(client)!r} is the server state directory; choose another directory")


def encode(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def decode(data: bytes | None) -> dict[str, Any] | None:
    """Parse a state file; anything that is not a JSON object, or is too large, counts as absent (stale)."""
    if not data or too_large(data):
        return None
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def too_large(data: bytes | None) -> bool:
    """More than MAX_STATE_BYTES: not a state file we or a service wrote; never trusted."""
    return data is not None and len(data) > MAX_STATE_BYTES


def read_payload(path: Path) -> ClientPayload | None:
    """A client connection file's payload; None when absent or not a JSON object."""
    return cast("ClientPayload | None", decode(read_bytes(path)))


def make_dirs(path: Path) -> None:
    """Create `path` and its missing parents 0700 (`mkdir(parents=True)` would give the parents the umask's
    mode); directories that exist are left as they are."""
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)


def ensure_private_dir(path: Path) -> None:
    """Create `path` 0700 with its missing parents (make_dirs), check it is ours, and make it private."""
    make_dirs(path)
    check_trusted(path, "state directory")
    if path.stat().st_mode & 0o777 != DIR_MODE and os.name == "posix":
        os.chmod(path, DIR_MODE)  # readable by others (checked: not writable): private from now on


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, so readers never see half a file."""
    ensure_private_dir(path.parent)
    # A unique name created exclusively (never an existing file or symlink), as mkstemp does,
    # without importing tempfile on the warm path.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if os.name == "posix":
            os.chmod(tmp, FILE_MODE)
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """os.replace. On Windows a file another process has open cannot be replaced for a moment (a sharing
    violation, PermissionError): other runs read client files and locks all the time, so retry briefly."""
    _retrying(lambda: os.replace(source, target), target)


def read_bytes(path: Path) -> bytes | None:
    """A state file's contents, at most READ_LIMIT bytes (see MAX_STATE_BYTES); None when it does not exist;
    on Windows retried while it is being replaced."""
    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read(READ_LIMIT)

    try:
        return _retrying(read, path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _retrying(call: Callable[[], T], path: str | os.PathLike[str]) -> T:
    delay = SHARING_FIRST_WAIT
    for _ in range(SHARING_RETRIES):
        try:
            return call()
        except PermissionError:
            if sys.platform != "win32":
                raise
            time.sleep(delay)
            delay *= 2
    try:
        return call()
    except PermissionError as exc:
        raise LauncherError(f"state file {os.fspath(path)}: {exc.strerror or exc} (another program keeps it "
                            "open); close it and try again", step="state file") from None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


class ServerState(NamedTuple):
    """The fields of a server status file that the launcher relies on.

    `start_time` is our addition: the process start time recorded at launch, so a
    PID reused after a reboot is never mistaken for the service. Files written by
    the original implementation lack it and are trusted on PID alone.
    """

    status: str
    pid: int | None
    port: int | None
    start_time: str | None
    log: str | None
    data: dict[str, Any]

    @classmethod
    def parse(cls, obj: dict[str, Any] | None) -> ServerState | None:
        """Return None for anything malformed, so it is treated as stale rather than trusted."""
        if obj is None:
            return None
        status, pid, port = obj.get("status"), obj.get("pid"), obj.get("port")
        if status not in STATUSES:
            return None
        if pid is not None and not _is_int(pid, 1, 2**31 - 1):
            return None
        if port is not None and not is_port(port):
            return None
        if status == "running" and port is None:
            return None
        start_time = obj.get("start_time")
        log = obj.get("log")
        return cls(
            status=status,
            pid=pid,
            port=port,
            start_time=start_time if isinstance(start_time, str) else None,
            log=log if isinstance(log, str) else None,
            data=obj,
        )

    def extra_ports(self) -> dict[str, int]:
        """Every integer `*_port` / `*-port` field besides `port` (forwarded by tunnels too)."""
        return {
            name: value
            for name, value in self.data.items()
            if name.endswith(("_port", "-port")) and is_port(value)
        }


def is_port(value: object) -> TypeGuard[int]:
    """A TCP port number (not a bool, which Python counts as an int)."""
    return _is_int(value, 1, 65535)


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
