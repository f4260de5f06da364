"""The operations the launcher needs from the service's host.

The launcher's state machine only talks to this interface, so it cannot tell
whether it drives this machine or an SSH server. Paths are POSIX strings as
seen on the host; `state_dir` and `home` are absolute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .. import scripts
from ..records import NamedTuple

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any

LOG_TAIL_LINES = 20
TAIL_BYTES = 65536  # the end of a log is all an error message needs; logs grow big


def read_start(size: int, offset: int) -> int:
    """Where `Host.read_from(path, offset)` starts in a file of `size` bytes."""
    return max(0, size + offset) if offset < 0 else min(offset, size)


def read_from_bytes(data: bytes, offset: int, limit: int | None = None) -> tuple[bytes, int]:
    """`Host.read_from` of a file whose whole contents are `data` (a host that can only read whole files)."""
    start = read_start(len(data), offset)
    data = data[start:] if limit is None else data[start:start + limit]
    return data, start + len(data)


class ScriptResult(NamedTuple):
    """What a script run on the host gave (a NamedTuple: `dataclasses` costs ~4 ms to import)."""

    returncode: int
    stdout: str
    stderr: str


def launch_answer(result: ScriptResult) -> tuple[str, bytes | None]:
    """The launch program's answer: its first line (the PID), and the status file launch.sh printed after it
    (None when it printed none: another host's launch, or no record yet)."""
    answer, _, printed = result.stdout.partition("\n")
    return answer.strip(), printed.encode() if printed else None


class Launch(NamedTuple):
    """A service to start detached: the launch program's arguments and stdin, and what they say as fields for a
    host that starts services with a tool of its own (hosts/guarded.py)."""

    script_args: list[str]
    stdin: bytes
    key: str
    workdir: str
    command: str
    conda: str | None
    record: dict[str, Any]
    ports: str = ""  # a stock server's ports to choose (scripts.ports_spec), which the launch program does
    setup: tuple[str, ...] = ()  # the config's setup lines, which the launch program runs first


class SeenProcess(NamedTuple):
    """`process_start_time(pid)` of a PID a status file named, looked up when the file was read."""

    pid: int
    start_time: str | None


class _NothingAhead:
    """Host.exec_ahead where nothing is opened ahead (not contextlib's nullcontext: a first launch loads no
    contextlib)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NOTHING_AHEAD = _NothingAhead()


class Host(ABC):
    """A machine that runs services: files, processes and TCP as seen from there."""

    #: Name used in messages ("localhost" or the SSH target).
    name: str
    #: Seconds between status-file polls while a service starts.
    poll_interval: float

    @property
    @abstractmethod
    def home(self) -> str:
        """Absolute home directory on the host (expands `~` in paths)."""

    @property
    @abstractmethod
    def state_dir(self) -> str:
        """Absolute directory of server status files and logs."""

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """A state file's contents, at most statefiles.READ_LIMIT bytes; None when it does not exist."""

    def read_state_file(self, name: str) -> bytes | None:
        """A file in `state_dir`; a host may fetch it along with its own first look-ups (SSH: home)."""
        return self.read(f"{self.state_dir}/{name}")

    def read_status_file(self, name: str) -> tuple[bytes | None, SeenProcess | None]:
        """read_state_file(name) and, when the host fetches it in the same step, the start time of the PID
        the file seems to name (None: not looked up). The caller uses it only for the PID it parsed from
        these bytes, and only for the check it makes right after the read (see service.identity_problem)."""
        return self.read_state_file(name), None

    def recall_status_file(self, name: str) -> bytes | None:
        """The status file `name` as an earlier read_status_file found it, where the host keeps that (a
        connection broker, from any command's read); None otherwise. Only a guess at where the service is,
        for work worth starting before the file is read again: nothing is decided on it."""
        return None

    @abstractmethod
    def mtime(self, path: str) -> float | None:
        """Modification time, or None when the file does not exist."""

    @abstractmethod
    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace a file via temp file + rename, mode 0600, parent made 0700."""

    @abstractmethod
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create a file only if it does not exist (a lock); False if it already did."""

    def create_then_read(self, path: str, data: bytes, other: str) -> tuple[bool, bytes | None]:
        """create_exclusive(path, data) and, if it succeeded, read(other) after `path` exists (e.g. a
        lock and the state it guards): (created, contents of other). Hosts may overlap the two."""
        created = self.create_exclusive(path, data)
        return created, self.read(other) if created else None

    @abstractmethod
    def rename(self, source: str, target: str) -> bool:
        """Atomically rename, replacing target; False when source does not exist."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete a file if present."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names in a directory ([] when it does not exist)."""

    @abstractmethod
    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        """Run a POSIX sh script with positional arguments and wait for it. Arguments are public (any user's
        `ps` shows them): what may be secret goes to the script's `stdin`."""

    def launch(self, request: Launch) -> ScriptResult:
        """Start a service detached (prepare.sh, launch.sh): stdout is its PID; a failure's exit status says
        which step."""
        return self.run_script(scripts.program("prepare", "launch"), request.script_args, request.stdin)

    @abstractmethod
    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        """A socket-like connection to host:port as seen from the service's host."""

    def exec_ahead(self) -> AbstractContextManager[None]:
        """Around steps that a script (a launch) is likely to follow: a host whose scripts each need a channel
        opened first (SSH without kept shells) opens the next one meanwhile, and closes it if unused."""
        return _NOTHING_AHEAD

    def close(self) -> None:  # noqa: B027 - a no-op unless the host holds a connection
        """Release the connection (nothing to do locally)."""

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return path

    def process_start_time(self, pid: int) -> str | None:
        """The identity of a live process we may signal (its start time), or None when gone."""
        result = self.run_script(scripts.program("process_info"), [str(pid)])
        return result.stdout.strip() or None if result.returncode == 0 else None

    def listens(self, pid: int, port: int) -> bool | None:
        """Whether a process of pid's process group listens on TCP `port`; None when the host cannot tell
        (no /proc: not Linux)."""
        result = self.run_script(scripts.program("port_listener"), [str(pid), str(port)])
        return None if result.returncode == scripts.Exit.CANNOT_TELL else result.returncode == 0

    def listening_ports(self, pid: int) -> list[int] | None:
        """The TCP ports a process of pid's process group listens on; None when the host cannot tell."""
        result = self.run_script(scripts.program("port_listener"), [str(pid), "-"])
        if result.returncode != 0:
            return None
        return sorted({int(word, 16) for word in result.stdout.split() if len(word) == 4})

    def signal_group(self, pid: int, signal: str) -> bool:
        """Send a signal (e.g. 'TERM') to the process group led by pid."""
        result = self.run_script(scripts.program("signal_group"), [signal, str(pid)])
        return result.returncode == 0

    @abstractmethod
    def read_from(self, path: str, offset: int, limit: int | None = None) -> tuple[bytes, int] | None:
        """The bytes from `offset` to the end, or `limit` bytes at most (a log has no size cap: its readers
        give one), and the offset just past them; None when absent.

        A negative offset counts from the end (clamped to the start; see
        `read_start`). An offset past the end returns no bytes and the file's
        size, so a caller following a file sees it was truncated.
        """

    def tail(self, path: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of a file ("" when absent); only its last TAIL_BYTES are read."""
        result = self.read_from(path, -TAIL_BYTES)
        if result is None:
            return ""
        data, end = result
        if end > len(data):
            data = data.partition(b"\n")[2]  # the first line was cut
        return b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:]).decode(errors="replace")
