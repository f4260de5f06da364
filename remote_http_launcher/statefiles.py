"""Where state lives and what it holds: client connection files and server status files.

Client files are always on this machine; server files live on the host that runs
the service and are reached through a `Host`. Both are JSON, written atomically
(temp file + rename) with mode 0600 in 0700 directories.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from . import jsontext
from .errors import ConfigError, LauncherError
from .records import NamedTuple, cache

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypedDict, TypeGuard, TypeVar

    T = TypeVar("T")

#: Paths are strings here (os.path): pathlib costs the warm path more than a tenth of its run.
PathArg = str | os.PathLike[str]
DIR_ENV = "REMOTE_HTTP_LAUNCHER_DIR"
DEFAULT_DIRNAME = ".remote-http-launcher"
REMOTE_STATE_DIR = "~/" + DEFAULT_DIRNAME + "/server"
FILE_MODE = 0o600
DIR_MODE = 0o700
WRITABLE_BY_OTHERS = 0o022
SECRET_NAME = "secret"  # the seal's key, beside what it seals (write_sealed)
SECRET_BYTES = 32  # also the seal's key: BLAKE2b takes up to 64 bytes
SEAL_BYTES = 32
MAX_SYMLINKS = 40  # as Linux: more on the way to a state directory is a loop
SHARING_RETRIES = 8  # Windows sharing violations: waits of 5, 10, ... 640 ms, about 1.3 s in all
SHARING_FIRST_WAIT = 0.005
#: Statuses of a server status file. "stale" is written by the original 0.4's `rhl-stop` once it has
#: stopped the service (it keeps the file): a record of a process that is gone.
STATUSES = ("starting", "running", "failed", "stale")
#: State files are a few hundred bytes (file_parameters and meta add at most half of this: config.py). Reads
#: stop one byte past it, so a huge file (planted, or a service gone wrong) costs neither minutes over a slow
#: link nor memory, and a file that big counts as corrupt (`decode`).
MAX_STATE_BYTES = 1 << 20
READ_LIMIT = MAX_STATE_BYTES + 1

#: The client connection file: `hostname` and `port` always; the rest when they apply. Tunnels add the
#: `tunneled-*` fields and their keeper; every extra `*_port` the service reported is there too (as
#: `<name>` and, tunnelled, `tunneled-<name>`), which a TypedDict cannot list.
if TYPE_CHECKING:
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
        "url": str,
    }, total=False)
else:  # the same at run time, without importing typing
    ClientPayload = dict


def base_dir() -> str:
    env = os.environ.get(DIR_ENV)
    if env:
        return os.path.expanduser(env)
    home = os.path.expanduser("~")
    if home == "~":  # no $HOME (%USERPROFILE%) and no password entry
        raise LauncherError(f"state directory: cannot tell your home directory; set ${DIR_ENV}",
                            step="state directory")
    return os.path.join(home, DEFAULT_DIRNAME)


def client_dir(connection_dir: PathArg | None = None) -> str:
    return os.path.expanduser(connection_dir) if connection_dir else os.path.join(base_dir(), "client")


def local_server_dir() -> str:
    return os.path.join(base_dir(), "server")


def client_file(key: str, connection_dir: PathArg | None, *, local_service: bool) -> str:
    """`<client dir>/<key>.json`; for a local service the client and server directories must differ."""
    directory = client_dir(connection_dir)
    if local_service:
        check_distinct(directory, local_server_dir())
    check_trusted(directory, "client directory")
    return os.path.join(directory, f"{key}.json")


def check_trusted(path: PathArg, what: str) -> None:
    """Refuse state another user could control: a symbolic link, or a file or directory of another user,
    or one others may write, or a directory above it that another user could change (`_check_parents`).
    Whoever controls the client directory redirects our connections (the warm path trusts the port a
    client file names), the broker directory our logins, the parse cache our commands: so this runs on
    every path, the warm one included. POSIX only: on Windows the user's profile directory is private
    by default."""
    if sys.platform == "win32":
        return
    _check_parents(path, what)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _unreachable(path, what, exc.strerror or str(exc)) from None
    problem = _untrusted(info)
    if problem is not None:
        raise LauncherError(f"{what} {path} {problem}, so another user could redirect your connections; remove "
                            f"it (it is made again, private) or use a directory of your own (--connection-dir or "
                            f"${DIR_ENV})", step="state directory")


def _untrusted(info: os.stat_result) -> str | None:
    """What makes a state file or directory untrustworthy (see check_trusted), or None."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():  # a feature check: the POSIX-stripped test run
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & WRITABLE_BY_OTHERS:
        return f"may be written by other users (mode {info.st_mode & 0o777:o})"
    return None


#: Directories whose every parent passed `_check_parents` in this process: a few lstat calls per command.
_TRUSTED_PARENTS: set[str] = set()


def _check_parents(path: PathArg, what: str) -> None:
    """Every directory (and symbolic link) met on the way to `path`'s parent must belong to us or root, and
    directories must be closed to others' writes unless sticky (/tmp): whoever may change one of them could
    rename our state directory away and put theirs in its place. Symbolic links are followed as the kernel
    does, each one checked where it lies. As OpenSSH's StrictModes, the directories above our home are the
    system's, not checked (in a user namespace /home may show as nobody's)."""
    parent = os.path.dirname(os.path.abspath(path))
    if parent in _TRUSTED_PARENTS:
        return
    above_home = _above_home()
    pending = parent.split("/")[::-1]
    current, links = "/", 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        entry = os.path.join(current, part)
        try:
            info = os.lstat(entry)
            target = os.readlink(entry) if stat.S_ISLNK(info.st_mode) else None
        except FileNotFoundError:
            return  # created by us, 0700, and checked as the state directory itself when used
        except OSError as exc:
            raise _unreachable(path, what, exc.strerror or str(exc)) from None
        problem = None if entry in above_home else _untrusted_parent(info)
        if problem is not None:
            raise LauncherError(f"{what} {path}: the directory {entry} above it {problem}, so another user could "
                                "put their own in its place; use a directory of your own (--connection-dir or "
                                f"${DIR_ENV}) in directories only you or root may change", step="state directory")
        if target is None:
            current = entry
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise _unreachable(path, what, os.strerror(errno.ELOOP))
        if target.startswith("/"):
            current = "/"
        pending.extend(target.split("/")[::-1])
    _TRUSTED_PARENTS.add(parent)


@cache
def _above_home() -> frozenset[str]:
    """The directories above our home directory (symbolic links resolved); none when it is unknown."""
    home = os.path.expanduser("~")
    if home == "~":  # no $HOME and no passwd entry
        return frozenset()
    above, directory = set(), os.path.realpath(home)
    while os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
        above.add(directory)
    return frozenset(above)


def _untrusted_parent(info: os.stat_result) -> str | None:
    if hasattr(os, "geteuid") and info.st_uid not in (os.geteuid(), 0):
        return f"belongs to another user (uid {info.st_uid})"
    sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if not stat.S_ISLNK(info.st_mode) and info.st_mode & WRITABLE_BY_OTHERS and not sticky:
        return f"may be written by other users (mode {info.st_mode & 0o777:o})"
    return None


def _unreachable(path: PathArg, what: str, why: str) -> LauncherError:
    return LauncherError(f"{what} {path}: {why}; use a directory of your own (--connection-dir or ${DIR_ENV})",
                         step="state directory")


def check_distinct(client: PathArg, server: PathArg) -> None:
    """Client and server files share names (`<key>.json`), so their directories must differ.

    Compared after resolving symlinks: a link to the server directory would let the
    client file overwrite the status file and lose the service's PID.
    """
    if os.path.realpath(client) == os.path.realpath(server):
        raise ConfigError(f"--connection-dir: {os.fspath(client)!r} is the server state directory; choose another "
                          "directory")


def encode(obj: Any) -> bytes:
    return (jsontext.dumps(obj, indent=2) + "\n").encode()


def decode(data: bytes | None) -> dict[str, Any] | None:
    """Parse a state file; anything that is not a JSON object, or is too large, counts as absent (stale)."""
    if not data or too_large(data):
        return None
    try:
        obj = jsontext.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def too_large(data: bytes | None) -> bool:
    """More than MAX_STATE_BYTES: not a state file we or a service wrote; never trusted."""
    return data is not None and len(data) > MAX_STATE_BYTES


def read_payload(path: PathArg) -> ClientPayload | None:
    """A client connection file's payload; None when absent or not a JSON object."""
    # Any JSON object: its fields are checked where they are used (typing.cast, without importing typing).
    return decode(read_bytes(path))  # type: ignore[return-value]


def make_dirs(path: PathArg) -> None:
    """Create `path` and its missing parents 0700 (`os.makedirs` would give the parents the umask's
    mode); directories that exist are left as they are."""
    missing = []
    ancestor = os.fspath(path)
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) not in (ancestor, ""):
        missing.append(ancestor)
        ancestor = os.path.dirname(ancestor)
    if not os.path.exists(ancestor):
        missing.append(ancestor)  # a relative path's first part
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass


def ensure_private_dir(path: PathArg) -> None:
    """Create `path` 0700 with its missing parents (make_dirs), check it is ours, and make it private."""
    make_dirs(path)
    check_trusted(path, "state directory")
    if os.stat(path).st_mode & 0o777 != DIR_MODE and os.name == "posix":
        os.chmod(path, DIR_MODE)  # readable by others (checked: not writable): private from now on


def write_atomic(path: PathArg, data: bytes) -> None:
    """Write via a temp file in the same directory, so readers never see half a file."""
    directory, name = os.path.split(os.fspath(path))
    ensure_private_dir(directory or os.curdir)
    # A unique name created exclusively (never an existing file or symlink), as mkstemp does,
    # without importing tempfile on the warm path.
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if os.name == "posix":
            os.chmod(tmp, FILE_MODE)
        replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def read_sealed(path: PathArg, what: str) -> bytes | None:
    """The payload `write_sealed` kept at `path`, or None when there is none or it fails a check: not ours
    (check_trusted), or sealed with another secret than ours (planted, or copied from another user's state
    directory), so such a file is ignored, never used. A directory that fails check_trusted is an error."""
    directory = os.path.dirname(os.fspath(path))
    check_trusted(directory, f"{what} directory")
    secret = _read_own(os.path.join(directory, SECRET_NAME), private=True)
    data = _read_own(path) if secret is not None else None
    if secret is None or data is None:
        return None
    seal, _, payload = data.partition(b"\n")
    return payload if equal_digests(secret, seal, _seal(secret, payload)) else None


def write_sealed(path: PathArg, payload: bytes) -> None:
    """Write `payload` with a seal (a keyed BLAKE2b MAC) made with this user's secret, kept 0600 beside it
    (made on first use), so `read_sealed` takes only what this user wrote."""
    directory = os.path.dirname(os.fspath(path))
    ensure_private_dir(directory)
    secret_path = os.path.join(directory, SECRET_NAME)
    secret = _read_own(secret_path, private=True)
    if secret is None:
        secret = os.urandom(SECRET_BYTES)
        write_atomic(secret_path, secret)
    write_atomic(path, _seal(secret, payload) + b"\n" + payload)


def _seal(secret: bytes, payload: bytes) -> bytes:
    return keyed_digest(secret, payload).hex().encode()


def keyed_digest(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b of `data` (a MAC by design; an empty `key` gives the plain hash), SEAL_BYTES long. From
    `_blake2`, hashlib's own home of it, when there: importing hashlib (or hmac) loads OpenSSL, a few ms
    of every warm run and reconnect for one small digest."""
    try:
        from _blake2 import blake2b
    except ImportError:  # an interpreter without the module: the same function through hashlib
        from hashlib import blake2b
    return blake2b(data, key=key, digest_size=SEAL_BYTES).digest()


def name_digest(data: bytes, digits: int) -> str:
    """The first `digits` hex digits of `data`'s plain BLAKE2b: a file name for it (a parse cache, a broker)."""
    return keyed_digest(b"", data).hex()[:digits]


def equal_digests(key: bytes, first: bytes, second: bytes) -> bool:
    """`first == second` for MACs, compared as MACs of them: equal or not, the time taken tells nothing of
    where they differ (an attacker cannot steer the keyed digests)."""
    return keyed_digest(key, first) == keyed_digest(key, second)


def _read_own(path: PathArg, *, private: bool = False) -> bytes | None:
    """A file's contents if it is ours (`_untrusted`; `private`: also unreadable by others, and a whole
    secret), else None. On Windows, as in check_trusted, the profile directory's privacy has to do."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if sys.platform != "win32" and (_untrusted(info) is not None or (private and info.st_mode & 0o077)):
        return None
    data = read_bytes(path)
    return None if data is None or (private and len(data) != SECRET_BYTES) else data


def replace(source: PathArg, target: PathArg) -> None:
    """os.replace. On Windows a file another process has open cannot be replaced for a moment (a sharing
    violation, PermissionError): other runs read client files and locks all the time, so retry briefly."""
    _retrying(lambda: os.replace(source, target), target)


def read_bytes(path: PathArg) -> bytes | None:
    """A state file's contents, at most READ_LIMIT bytes (see MAX_STATE_BYTES); None when it does not exist;
    on Windows retried while it is being replaced."""
    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read(READ_LIMIT)

    try:
        return _retrying(read, path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _retrying(call: Callable[[], T], path: PathArg) -> T:
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


def remove(path: PathArg) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
