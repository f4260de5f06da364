"""An SSH server as the service's host, over one paramiko Transport.

Round trips dominate over slow links, so everything shares one Transport,
SFTP starts once and only when needed, and the operations a reconnect needs
(home directory, status file, PID check) are pipelined SFTP requests: two
round trips per file, and no login shell, whose ~/.bashrc can take seconds
on clusters. Only launching and signalling run shell scripts. A long-lived
connection (the broker's) keeps `sh` sessions instead (`keep_shells`,
ssh/shells.py): then scripts, state-file reads and PID checks take one round
trip each, the login shell's start-up paid once per session.
A server whose authorized_keys force rhl-guard refuses SFTP and `sh`: when
the first SFTP step fails, an exec channel tells whether the guard refused
it, and then every call goes to a GuardedHost (hosts/guarded.py).
"""

from __future__ import annotations

import errno
import posixpath
import shlex
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from .. import scripts, statefiles
from ..background import Background
from ..errors import HostError
from ..processes import start_time_from_stat
from ..prompts import Prompt
from ..ssh._paramiko import paramiko, send_channel_request
from ..ssh.connection import SSHConnection, connect
from ..ssh.sftp import PipelinedSFTP
from ..ssh.shells import ShellPool
from .base import Host, Launch, ScriptResult, SeenProcess, read_start
from .guarded import GuardedHost, refusal_of

SSH_POLL_INTERVAL = 0.2
SCRIPT_TIMEOUT = 120.0
CHANNEL_OPEN_TIMEOUT = 30.0
PROC_SELF = "/proc/self"
NO_PROC = -1
OUTPUT_MARKER = "--remote-http-launcher-output--"
GUARD_PROBE = "sh -c 'exit 0'"  # sent only after SFTP failed: rhl-guard refuses it (hosts/guarded.py)
P = ParamSpec("P")
R = TypeVar("R")


def _or_guarded(method: Callable[Concatenate[SSHHost, P], R]) -> Callable[Concatenate[SSHHost, P], R]:
    """The call goes to `guard` once the server turned out to force rhl-guard (see `_load_identity`); the
    step that found out failed before doing anything, so it is made again there."""
    def call(self: SSHHost, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.guard is None:
            try:
                return method(self, *args, **kwargs)
            except HostError:
                if self.guard is None:
                    raise
        return cast(R, getattr(self.guard, method.__name__)(*args, **kwargs))

    return call


class SSHHost(Host):
    """Runs services on an SSH server; `transport` and `connection` stay usable (e.g. for tunnels)."""

    poll_interval = SSH_POLL_INTERVAL

    def __init__(self, connection: SSHConnection, name: str | None = None) -> None:
        self.connection = connection
        self.transport: paramiko.Transport = connection.transport
        self.name = name or connection.endpoint.alias
        self._files: PipelinedSFTP | None = None
        self._home: str | None = None
        self._uid: int | None = None  # owner of /proc/self, i.e. who our processes run as; NO_PROC without /proc
        self.shells: ShellPool | None = None  # kept `sh` sessions (see keep_shells)
        self.guard: GuardedHost | None = None  # set when the server forces rhl-guard: every call goes there
        self._ahead: Background[paramiko.Channel] | None = None  # exec_ahead's channel, opening

    @classmethod
    def connect(cls, target: str, *, interactive: bool = True, prompt: Prompt | None = None,
                accept_new_host_key: bool = False) -> SSHHost:
        """`interactive=False` never asks (the keeper's reconnects); `prompt` is where questions go (default:
        the terminal or Jupyter cell of the call, see ssh.connection.connect)."""
        return cls(connect(target, interactive=interactive, prompt=prompt, accept_new_host_key=accept_new_host_key),
                   name=target)

    def keep_shells(self) -> None:
        """Run scripts and small reads in kept `sh` sessions (ssh/shells.py): one round trip each instead of
        two. For a long-lived connection (the broker): its home and first session are fetched now, ahead of
        the first command."""
        try:
            self._load_identity()
        except HostError:
            if self.guard is None:
                raise
            return  # the guard runs no shell
        self.shells = ShellPool(self.transport, CHANNEL_OPEN_TIMEOUT)
        threading.Thread(target=self.shells.warm, daemon=True, name="rhl-shell-warm").start()

    # ---- paths ----
    @property
    def home(self) -> str:
        if self._home is None and self.guard is None:
            try:
                self._load_identity()
            except HostError:
                if self.guard is None:
                    raise
        if self.guard is not None:
            return self.guard.home
        assert self._home is not None
        return self._home

    @property
    def state_dir(self) -> str:
        home = self.home
        return self.guard.state_dir if self.guard is not None else home + statefiles.REMOTE_STATE_DIR[1:]

    def _load_identity(self, also_open: str | None = None) -> int | None:
        """SFTP's '.' (the login directory) and the owner of /proc/self, in one round trip.

        `also_open` (a path relative to that directory) is opened for reading
        in the same flight; the request is returned for `files.handle`.
        """
        try:
            with self._step("home directory"):
                self._home, attrs, opening = self.files.realpath_and_stat(".", PROC_SELF, also_open)
        except HostError:
            self._detect_guard()
            raise
        self._uid = NO_PROC if attrs is None or attrs.st_uid is None else attrs.st_uid
        return opening

    def _detect_guard(self) -> None:
        """SFTP failed: a server whose authorized_keys force rhl-guard refuses it silently (a subsystem's
        stderr is not sent), but an exec channel gets its reason; then `guard` takes every call."""
        if self.guard is not None or not self.transport.is_active():
            return
        try:
            code, _out, err = self._exec(GUARD_PROBE)
        except HostError:
            return
        reason = refusal_of(err)
        if code == 1 and reason is not None:
            self.guard = GuardedHost(self.connection, self.name, self._exec, reason)

    # ---- files ----
    @property
    def files(self) -> PipelinedSFTP:
        """The SFTP session, started on first use."""
        if self._files is None:
            with self._step("start"), self.connection.answer_within():
                self._files = PipelinedSFTP.start(self.transport)
            # A live server answers each request at once: no data for this long means the link is gone
            # (per reply, so reading a big file over a slow link is fine).
            channel = self._files.client.get_channel()
            assert channel is not None
            channel.settimeout(self.connection.endpoint.reply_timeout)
        return self._files

    @_or_guarded
    def read(self, path: str) -> bytes | None:
        """In a kept shell when there is one (one round trip); over SFTP (two) otherwise, and whenever the
        shell's `head` cannot say (unreadable, not a regular file), so errors read as before."""
        if self.shells is not None:
            with self._step("read", path):
                found = self._read_in_shell(scripts.program("read_file"), [str(statefiles.READ_LIMIT), path])
            if found is not None and found[0] in (0, scripts.Exit.READ_ABSENT):
                return found[1] if found[0] == 0 else None
        with self._step("read", path):
            return self._read_opened(self.files.send_open(path, "READ"))

    @_or_guarded
    def read_state_file(self, name: str) -> bytes | None:
        """The first one is opened in the same flight as the home directory look-up."""
        if self._home is not None:
            return super().read_state_file(name)
        assert statefiles.REMOTE_STATE_DIR.startswith("~/")
        opening = self._load_identity(also_open=f"{statefiles.REMOTE_STATE_DIR[2:]}/{name}")
        assert opening is not None
        with self._step("read", f"{self.state_dir}/{name}"):
            return self._read_opened(opening)

    @_or_guarded
    def read_status_file(self, name: str) -> tuple[bytes | None, SeenProcess | None]:
        """With kept shells: the file and its PID's start time in one script (one round trip instead of two)."""
        if self.shells is None or self._home is None:
            return super().read_status_file(name)
        path = f"{self.state_dir}/{name}"
        with self._step("read", path):
            found = self._read_in_shell(scripts.program("read_status"), [str(statefiles.READ_LIMIT), path])
        if found is None or found[0] not in (0, scripts.Exit.READ_ABSENT):
            return super().read_status_file(name)
        if found[0] == scripts.Exit.READ_ABSENT:
            return None, None
        pid, _, start = found[2].decode(errors="replace").strip().partition(" ")
        return found[1], SeenProcess(int(pid), start.strip() or None) if pid.isdigit() else None

    def _read_in_shell(self, script: str, args: list[str]) -> tuple[int, bytes, bytes] | None:
        """A quick read-only script in a kept shell, answered within the reply timeout as an SFTP read is
        (TimeoutError: the link is silent, see `_step`); None when it did not complete: the caller reads over
        SFTP (reading twice is harmless)."""
        assert self.shells is not None
        reply_timeout = self.connection.endpoint.reply_timeout
        try:
            return self.shells.run(script, args, b"", reply_timeout, reply_timeout)
        except TimeoutError:
            raise
        except (EOFError, OSError):
            if not self.transport.is_active():
                raise
            return None

    def _read_opened(self, opening: int) -> bytes | None:
        """The contents of a file whose open request was sent; None when it does not exist."""
        try:
            handle = self.files.handle(opening)
        except FileNotFoundError:
            return None
        return self.files.read_and_close(handle, limit=statefiles.READ_LIMIT)

    @_or_guarded
    def mtime(self, path: str) -> float | None:
        with self._step("stat", path):
            try:
                return float(self.files.client.stat(path).st_mtime or 0)
            except FileNotFoundError:
                return None

    @_or_guarded
    def write_atomic(self, path: str, data: bytes) -> None:
        temp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        with self._step("write", path):
            self.files.write_and_close(self._create(temp), data)
            try:
                self.files.client.posix_rename(temp, path)
            except BaseException:
                self._remove_quietly(temp)
                raise

    @_or_guarded
    def create_exclusive(self, path: str, data: bytes) -> bool:
        with self._step("create", path):
            try:
                handle = self._create(path)
            except FileExistsError:
                return False
            self.files.write_and_close(handle, data)
            return True

    @_or_guarded
    def create_then_read(self, path: str, data: bytes, other: str) -> tuple[bool, bytes | None]:
        """Writing `path` and opening `other` share a flight, sent once `path` was created."""
        with self._step("create", path):
            try:
                handle = self._create(path)
            except FileExistsError:
                return False, None
            writes = self.files.send_write_and_close(handle, data)
            opening = self.files.send_open(other, "READ")
            self.files.collect(writes)
        with self._step("read", other):
            return True, self._read_opened(opening)

    @_or_guarded
    def rename(self, source: str, target: str) -> bool:
        with self._step("rename", source):
            try:
                self.files.client.posix_rename(source, target)
            except FileNotFoundError:
                return False
            return True

    @_or_guarded
    def remove(self, path: str) -> None:
        with self._step("remove", path), suppress(FileNotFoundError):
            self.files.client.remove(path)

    @_or_guarded
    def listdir(self, path: str) -> list[str]:
        with self._step("list", path):
            try:
                return sorted(self.files.client.listdir(path))
            except FileNotFoundError:
                return []

    @_or_guarded
    def read_from(self, path: str, offset: int, limit: int | None = None) -> tuple[bytes, int] | None:
        """Only the requested part crosses the network (log tails, `logs --follow`)."""
        with self._step("read", path):
            try:
                handle = self.files.open(path, "READ")
            except FileNotFoundError:
                return None
            start = read_start(int(self.files.fstat(handle).st_size or 0), offset)
            data = self.files.read_and_close(handle, start, limit)
        return data, start + len(data)

    def _create(self, path: str) -> bytes:
        """Open a new file (0600) exclusively, making missing parents (0700); FileExistsError if it exists.

        SFTP v3 reports 'exists' as a plain failure, so a plain failure is
        looked into: the file is there (FileExistsError), or it was removed
        since (a lock just released), and the create is tried again.
        """
        failure: OSError | None = None
        for attempt in range(3):
            try:
                return self.files.open(path, "WRITE", "CREATE", "EXCL", mode=statefiles.FILE_MODE)
            except FileNotFoundError:
                if attempt:
                    raise
                self._makedirs(posixpath.dirname(path))
            except OSError as exc:
                if exc.errno is not None:
                    raise
                if self._exists(path):
                    raise FileExistsError(errno.EEXIST, f"{path} exists") from None
                failure = exc
        assert failure is not None
        raise failure

    def _makedirs(self, directory: str) -> None:
        """`mkdir -p`; the directories it creates get mode 0700."""
        try:
            self.files.client.mkdir(directory, statefiles.DIR_MODE)
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
            self.files.client.lstat(path)
        except FileNotFoundError:
            return False
        return True

    def _is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.files.client.stat(path).st_mode or 0)
        except FileNotFoundError:
            return False

    def _remove_quietly(self, path: str) -> None:
        with suppress(OSError):
            self.files.client.remove(path)

    # ---- processes ----
    @_or_guarded
    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        """`sh -c SCRIPT sh ARGS...` in a kept shell session when there is one, else in an exec channel."""
        found = self._run_in_shell(script, args, stdin) if self.shells is not None else None
        if found is not None:
            code, stdout, stderr = found
            return ScriptResult(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        return self._exec_script(script, args, stdin)

    def _run_in_shell(self, script: str, args: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes] | None:
        """(exit status, stdout, stderr) from a kept shell session; None when it did not run the script."""
        assert self.shells is not None
        try:
            with self.connection.probing():
                return self.shells.run(script, args, stdin, self.connection.endpoint.reply_timeout, SCRIPT_TIMEOUT)
        except TimeoutError as exc:
            self.connection.give_up(str(exc))  # later steps would wait too
            raise self.connection.fail("exec", str(exc)) from None
        except (EOFError, OSError) as exc:
            if not self.transport.is_active():
                raise self.connection.fail("exec", _describe(exc, self.connection)) from None
            return -1, b"", str(exc).encode()  # as an exec channel whose shell was killed

    def _exec_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        """`sh -c SCRIPT sh ARGS...` in an exec channel; every word is quoted for the login shell.

        Login shells may print greetings (e.g. from ~/.bashrc) before our
        script runs, so the script's own output starts after a marker.
        """
        command = shlex.join(["sh", "-c", f"printf %s {OUTPUT_MARKER}\n{script}", "sh", *args])
        code, stdout, stderr = self._exec(command, stdin)
        noise, marker, output = stdout.partition(OUTPUT_MARKER.encode())
        return ScriptResult(code, (output if marker else noise).decode(errors="replace"),
                            stderr.decode(errors="replace"))

    def _exec(self, command: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of a command line in an exec channel."""
        channel = None
        try:
            with self.connection.answer_within():  # exec_command waits for the server without a limit
                channel = self._channel()
                channel.settimeout(SCRIPT_TIMEOUT)
                if stdin:  # in the same flight as the command, which reads it at once
                    send_channel_request(channel, "exec", command)
                    channel.sendall(stdin)
                    channel.shutdown_write()
                else:
                    channel.exec_command(command)
            # Our scripts and the helpers print little; a log (rhl-logs) fits the channel window as it is
            # read, and stderr is buffered meanwhile, so reading stdout to the end first cannot deadlock.
            with self.connection.probing():
                stdout = channel.makefile("rb").read()
                stderr = channel.makefile_stderr("rb").read()
                code = channel.recv_exit_status()
            if code == -1 and not self.transport.is_active():  # the output ended with the connection
                raise EOFError
        except TimeoutError:
            self.connection.give_up(f"no answer within {SCRIPT_TIMEOUT:.0f} s")  # later steps would wait too
            raise self.connection.fail("exec", f"no answer within {SCRIPT_TIMEOUT:.0f} s") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self.connection.fail("exec", _describe(exc, self.connection)) from None
        finally:
            if channel is not None:
                channel.close()
        return code, stdout, stderr

    @contextmanager
    def exec_ahead(self) -> Iterator[None]:
        """The next exec channel is opened in the background, its open in flight with the steps inside (a
        launch's lock) rather than a round trip after them; `_exec` takes it. Unused, it is closed when the
        steps end, or when it opens if they ended first (a Ctrl-C does not wait for the server)."""
        if self.shells is not None or self.guard is not None or self._ahead is not None:
            yield
            return
        self._ahead = Background(lambda: self.transport.open_session(timeout=CHANNEL_OPEN_TIMEOUT),
                                 paramiko.Channel.close)
        try:
            yield
        finally:
            ahead, self._ahead = self._ahead, None
            if ahead is not None:
                ahead.abandon()

    def _channel(self) -> paramiko.Channel:
        """exec_ahead's channel when it opened (waiting for it, as for any open), else a new one."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                channel = ahead.result()
            except Exception:  # opened again the usual way below, which reports what is wrong
                pass
            else:
                if channel.active and not channel.closed:
                    return channel
        return self.transport.open_session(timeout=CHANNEL_OPEN_TIMEOUT)

    @_or_guarded
    def process_start_time(self, pid: int) -> str | None:
        """Read /proc/PID/stat over SFTP (two round trips, no shell) where the host has /proc; with kept
        shells, process_info.sh in one (one round trip)."""
        if self.shells is not None:
            return super().process_start_time(pid)
        if self._uid is None:
            self._load_identity()
        if self._uid == NO_PROC:
            return super().process_start_time(pid)
        path = f"/proc/{pid}/stat"
        with self._step("read", path):
            try:
                handle = self.files.open(path, "READ")
            except (FileNotFoundError, PermissionError):
                return None
            attrs, data = self.files.fstat_read_and_close(handle)
        if self._uid not in (0, attrs.st_uid):
            return None  # another user's process: not ours to signal
        return start_time_from_stat(data)

    @_or_guarded
    def listens(self, pid: int, port: int) -> bool | None:
        return super().listens(pid, port)

    @_or_guarded
    def listening_ports(self, pid: int) -> list[int] | None:
        return super().listening_ports(pid)

    @_or_guarded
    def signal_group(self, pid: int, signal: str) -> bool:
        return super().signal_group(pid, signal)

    @_or_guarded
    def launch(self, request: Launch) -> ScriptResult:
        return super().launch(request)

    # ---- TCP as seen from the host ----
    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        return self.connection.forward(host, port, timeout)

    def close(self) -> None:
        if self.shells is not None:
            self.shells.close()
        if self._files is not None:
            self._files.client.close()
            self._files = None
        self.connection.close()

    @contextmanager
    def _step(self, what: str, path: str = "") -> Iterator[None]:
        """Turn SFTP and connection failures into one-line HostErrors naming the host, step and path.

        A reply that does not come within the reply timeout (the SFTP
        channel's timeout) means the link is gone: the connection is closed.
        """
        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                self.connection.give_up(f"no answer within {self.connection.endpoint.reply_timeout:g} s")
            where = f" {path}" if path else ""
            raise self.connection.fail("SFTP", f"{what}{where}: {_describe(exc, self.connection)}") from None




def _describe(exc: BaseException, connection: SSHConnection) -> str:
    if not connection.transport.is_active():
        return f"connection lost ({connection.lost})" if connection.lost else "connection lost"
    return (getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__).strip()


__all__ = ["PipelinedSFTP", "SSHHost"]
