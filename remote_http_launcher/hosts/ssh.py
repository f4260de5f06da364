"""An SSH server as the service's host, over one paramiko Transport.

Round trips dominate over slow links, so everything shares one Transport,
SFTP is opened once and only when needed, and the hot operations (reading a
status file, checking a PID on Linux) are pipelined SFTP requests instead of
shell commands: a small file costs two round trips, an exec costs three.
"""

from __future__ import annotations

import errno
import posixpath
import shlex
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import statefiles
from ..errors import HostError
from ..sshconnect import SSHConnection, connect
from .base import LOG_TAIL_LINES, Host, ScriptResult

if TYPE_CHECKING:
    import paramiko

SSH_POLL_INTERVAL = 0.2
SCRIPT_TIMEOUT = 120.0
CHANNEL_OPEN_TIMEOUT = 30.0
READ_CHUNK = 32768  # what paramiko and OpenSSH's sftp-server use per request
TAIL_BYTES = 65536
PROC_SELF = "/proc/self"


class SSHHost(Host):
    """Runs services on an SSH server; `transport` and `connection` are reusable (e.g. for tunnels)."""

    poll_interval = SSH_POLL_INTERVAL

    def __init__(self, connection: SSHConnection, name: str | None = None) -> None:
        self.connection = connection
        self.transport: paramiko.Transport = connection.transport
        self.name = name or connection.endpoint.alias
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._proc_uid: int | None = None  # uid our processes run as, from /proc/self; -1: no /proc

    @classmethod
    def connect(cls, target: str) -> SSHHost:
        return cls(connect(target), name=target)

    # ---- paths ----
    @property
    def home(self) -> str:
        if self._home is None:
            with self._step("home directory"):
                self._home = self.sftp.normalize(".")
        return self._home

    @property
    def state_dir(self) -> str:
        return self.expand(statefiles.REMOTE_STATE_DIR)

    # ---- files ----
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            with self._step("SFTP", "start"):
                self._sftp = self.transport.open_sftp_client()
        return self._sftp

    def read(self, path: str) -> bytes | None:
        with self._step("read", path):
            try:
                handle = self._open(path, _flags("READ"))
            except FileNotFoundError:
                return None
            return self._read_and_close(handle)

    def mtime(self, path: str) -> float | None:
        with self._step("stat", path):
            try:
                return float(self.sftp.stat(path).st_mtime or 0)
            except FileNotFoundError:
                return None

    def write_atomic(self, path: str, data: bytes) -> None:
        temp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        with self._step("write", path):
            self._write_new(temp, data)
            try:
                self.sftp.posix_rename(temp, path)
            except BaseException:
                self._remove_quietly(temp)
                raise

    def create_exclusive(self, path: str, data: bytes) -> bool:
        with self._step("create", path):
            try:
                self._write_new(path, data)
            except FileExistsError:
                return False
            return True

    def rename(self, source: str, target: str) -> bool:
        with self._step("rename", source):
            try:
                self.sftp.posix_rename(source, target)
            except FileNotFoundError:
                return False
            return True

    def remove(self, path: str) -> None:
        with self._step("remove", path):
            try:
                self.sftp.remove(path)
            except FileNotFoundError:
                pass

    def listdir(self, path: str) -> list[str]:
        with self._step("list", path):
            try:
                return sorted(self.sftp.listdir(path))
            except FileNotFoundError:
                return []

    def tail(self, path: str, lines: int = LOG_TAIL_LINES) -> str:
        """Only the end of the file crosses the network: logs of long-running services grow big."""
        with self._step("read", path):
            try:
                handle = self._open(path, _flags("READ"))
            except FileNotFoundError:
                return ""
            size = self._fstat_size(handle)
            start = max(0, size - TAIL_BYTES)
            data = self._read_and_close(handle, start)
        if start:
            data = data.partition(b"\n")[2]  # the first line was cut
        return b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:]).decode(errors="replace")

    # ---- processes ----
    def run_script(self, script: str, args: list[str]) -> ScriptResult:
        """`sh -c SCRIPT sh ARGS...` in an exec channel; every word is quoted for the login shell."""
        import paramiko

        command = shlex.join(["sh", "-c", script, "sh", *args])
        channel = None
        try:
            channel = self.transport.open_session(timeout=CHANNEL_OPEN_TIMEOUT)
            channel.settimeout(SCRIPT_TIMEOUT)
            channel.exec_command(command)
            # Our scripts print a few lines, far below the channel window, so reading
            # stdout to the end before stderr cannot deadlock.
            stdout = channel.makefile("rb").read()
            stderr = channel.makefile_stderr("rb").read()
            code = channel.recv_exit_status()
        except TimeoutError:
            raise self.connection.fail("exec", f"no answer within {SCRIPT_TIMEOUT:.0f} s") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self.connection.fail("exec", _describe(exc, self.transport)) from None
        finally:
            if channel is not None:
                channel.close()
        return ScriptResult(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def process_start_time(self, pid: int) -> str | None:
        """Read /proc/PID/stat over SFTP (two round trips) where the host has /proc; else the script."""
        uid = self._our_uid()
        if uid < 0:
            return super().process_start_time(pid)
        path = f"/proc/{pid}/stat"
        with self._step("read", path):
            try:
                handle = self._open(path, _flags("READ"))
            except (FileNotFoundError, PermissionError):
                return None
            attrs, data = self._stat_and_read(handle)
        fields = data.rpartition(b")")[2].split()
        if uid not in (0, attrs.st_uid) or len(fields) < 20 or fields[0] == b"Z":
            return None  # another user's process (we may not signal it), or a zombie
        return "proc:" + fields[19].decode()

    def _our_uid(self) -> int:
        if self._proc_uid is None:
            with self._step("stat", PROC_SELF):
                try:
                    attrs = self.sftp.stat(PROC_SELF)
                except FileNotFoundError:
                    self._proc_uid = -1
                else:
                    self._proc_uid = attrs.st_uid if attrs.st_uid is not None else -1
        return self._proc_uid

    # ---- TCP as seen from the host ----
    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        return self.connection.forward(host, port, timeout)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.connection.close()

    # ---- SFTP requests, pipelined (paramiko's file objects wait for every reply) ----
    def _open(self, path: str, flags: int, mode: int | None = None) -> bytes:
        from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTPError
        from paramiko.sftp_attr import SFTPAttributes

        attrs = SFTPAttributes()
        attrs.st_mode = mode
        kind, msg = self.sftp._request(CMD_OPEN, path, flags, attrs)
        if kind != CMD_HANDLE:
            raise SFTPError("expected a file handle")
        return msg.get_binary()

    def _read_and_close(self, handle: bytes, offset: int = 0) -> bytes:
        """Read to the end; the close is sent without waiting for its reply."""
        from paramiko.sftp import CMD_CLOSE, CMD_READ, int64

        sftp, chunks = self.sftp, []
        try:
            while True:
                try:
                    _, msg = sftp._request(CMD_READ, handle, int64(offset), READ_CHUNK)
                except EOFError:
                    break
                data = msg.get_string()
                chunks.append(data)
                offset += len(data)
                if len(data) < READ_CHUNK:
                    break
        finally:
            sftp._async_request(type(None), CMD_CLOSE, handle)
        return b"".join(chunks)

    def _fstat(self, handle: bytes) -> paramiko.SFTPAttributes:
        from paramiko.sftp import CMD_FSTAT
        from paramiko.sftp_attr import SFTPAttributes

        _, msg = self.sftp._request(CMD_FSTAT, handle)
        return SFTPAttributes._from_msg(msg)

    def _fstat_size(self, handle: bytes) -> int:
        return int(self._fstat(handle).st_size or 0)

    def _stat_and_read(self, handle: bytes) -> tuple[paramiko.SFTPAttributes, bytes]:
        """fstat, read and close a small file in one flight (replies come back in request order)."""
        from paramiko.sftp import CMD_CLOSE, CMD_FSTAT, CMD_READ, int64
        from paramiko.sftp_attr import SFTPAttributes

        sftp = self.sftp
        stat_request = sftp._async_request(type(None), CMD_FSTAT, handle)
        read_request = sftp._async_request(type(None), CMD_READ, handle, int64(0), READ_CHUNK)
        sftp._async_request(type(None), CMD_CLOSE, handle)
        attrs = SFTPAttributes._from_msg(sftp._read_response(stat_request)[1])
        try:
            data = sftp._read_response(read_request)[1].get_string()
        except EOFError:
            data = b""
        return attrs, data

    def _write_new(self, path: str, data: bytes) -> None:
        """Create path (mode 0600, parents 0700) and write it: open, then writes and close in one flight."""
        from paramiko.sftp import CMD_CLOSE, CMD_WRITE, int64

        flags = _flags("WRITE", "CREATE", "EXCL")
        try:
            handle = self._open(path, flags, statefiles.FILE_MODE)
        except FileNotFoundError:
            self._makedirs(posixpath.dirname(path))
            handle = self._open(path, flags, statefiles.FILE_MODE)
        except OSError as exc:
            if exc.errno is None and self._exists(path):
                raise FileExistsError(errno.EEXIST, f"{path} exists") from None  # SFTP v3 has no 'exists' code
            raise
        sftp = self.sftp
        requests = [sftp._async_request(type(None), CMD_WRITE, handle, int64(start), data[start:start + READ_CHUNK])
                    for start in range(0, len(data), READ_CHUNK)]
        requests.append(sftp._async_request(type(None), CMD_CLOSE, handle))
        for number in requests:
            sftp._read_response(number)

    def _makedirs(self, directory: str) -> None:
        """`mkdir -p`; the directories it creates get mode 0700."""
        try:
            self.sftp.mkdir(directory, statefiles.DIR_MODE)
        except FileNotFoundError:
            parent = posixpath.dirname(directory)
            if parent == directory:
                raise
            self._makedirs(parent)
            self._makedirs(directory)
        except OSError:
            if not self._is_dir(directory):
                raise

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.lstat(path)
        except FileNotFoundError:
            return False
        return True

    def _is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return False

    def _remove_quietly(self, path: str) -> None:
        try:
            self.sftp.remove(path)
        except OSError:
            pass

    @contextmanager
    def _step(self, what: str, path: str = "") -> Iterator[None]:
        """Turn SFTP and connection failures into one-line HostErrors naming the host, step and path."""
        import paramiko

        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as exc:
            where = f" {path}" if path else ""
            raise self.connection.fail("SFTP", f"{what}{where}: {_describe(exc, self.transport)}") from None


def _flags(*names: str) -> int:
    from paramiko import sftp

    result = 0
    for name in names:
        result |= getattr(sftp, f"SFTP_FLAG_{name}")
    return result


def _describe(exc: BaseException, transport: paramiko.Transport) -> str:
    if not transport.is_active():
        return "connection lost"
    return (getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__).strip()


__all__ = ["SSHHost"]
