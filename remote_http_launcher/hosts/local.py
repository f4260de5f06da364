"""This machine as the service's host."""

from __future__ import annotations

import os
import sys

from .. import scripts, statefiles
from ..handshake import tcp_connect
from ..processes import owned_identity
from .base import Host, Launch, ScriptResult, SeenProcess, read_start

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from typing import Any

# At their defaults in a service (as the original starts it), whatever the launcher ignores: SIGPIPE, which
# Python ignores, and Ctrl-C's, which a launcher run as `remote-http-launcher cfg &` ignores.
DEFAULT_SIGNALS = ("SIGINT", "SIGQUIT", "SIGPIPE")
LOCAL_POLL_INTERVAL = 0.002  # a local status-file read is cheap: notice a ready service within milliseconds
SHELL = "/bin/sh"


class LocalHost(Host):
    """Runs services on this machine; needs a POSIX `sh` (the server side of the contract)."""

    name = "localhost"
    poll_interval = LOCAL_POLL_INTERVAL

    @property
    def home(self) -> str:
        return os.path.expanduser("~")

    @property
    def state_dir(self) -> str:
        """The server directory, refused when another user could control it (its status files name the
        processes `stop` signals)."""
        directory = statefiles.local_server_dir()
        statefiles.check_trusted(directory, "server directory")
        return os.path.abspath(directory)

    def read(self, path: str) -> bytes | None:
        return statefiles.read_bytes(path)

    def read_status_file(self, name: str) -> tuple[bytes | None, SeenProcess | None]:
        """The PID check is in-process here, so it is made along with the read (one code path for callers)."""
        raw = self.read_state_file(name)
        state = statefiles.ServerState.parse(statefiles.decode(raw))  # as the caller parses it
        if state is None or state.pid is None:
            return raw, None
        return raw, SeenProcess(state.pid, self.process_start_time(state.pid))

    def read_from(self, path: str, offset: int, limit: int | None = None) -> tuple[bytes, int] | None:
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = read_start(size, offset)
                handle.seek(start)
                data = handle.read(-1 if limit is None else limit)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data, start + len(data)

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def write_atomic(self, path: str, data: bytes) -> None:
        statefiles.write_atomic(path, data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        statefiles.ensure_private_dir(os.path.dirname(path))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, statefiles.FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True

    def rename(self, source: str, target: str) -> bool:
        try:
            statefiles.replace(source, target)
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str) -> None:
        statefiles.remove(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        import subprocess  # not on a first launch's way: launch() spawns its shell itself

        proc = subprocess.run([SHELL, "-c", script, "sh", *args], input=stdin, capture_output=True, check=False)
        return ScriptResult(proc.returncode, proc.stdout.decode(errors="replace"),
                            proc.stderr.decode(errors="replace"))

    def launch(self, request: Launch) -> ScriptResult:
        """The launch shell spawned straight from here (posix_spawn) as a session of its own, with SIGINT and
        SIGQUIT at their defaults (start.sh): launch.sh's `&`, setsid and env cost a first launch three execs
        and a fork, and Python's subprocess a tenth of its imports. Its stdout is its PID once prepared.
        The service is then this process's child: a thread reaps it when it ends, so that a long-lived
        caller (a notebook's kernel) keeps no zombie; when this process ends first, init adopts it."""
        if sys.platform == "win32" or not hasattr(os, "POSIX_SPAWN_DUP2"):
            return super().launch(request)
        import _thread

        # signal's C half, loaded with every interpreter: the same numbers without `signal`'s enums
        signals = __import__("_signal")
        argv = [SHELL, "-c", scripts.program("prepare", "start"), "sh", *request.script_args]
        stdin, to_stdin = os.pipe()
        from_stdout, stdout = os.pipe()
        from_stderr, stderr = os.pipe()
        defaults = [getattr(signals, name) for name in DEFAULT_SIGNALS if hasattr(signals, name)]
        try:
            pid = os.posix_spawn(SHELL, argv, os.environ, setsid=True, setsigdef=defaults,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                                               (os.POSIX_SPAWN_DUP2, stderr, 2)])
        except NotImplementedError:  # no POSIX_SPAWN_SETSID in this libc
            for fd in (to_stdin, from_stdout, from_stderr):
                os.close(fd)
            return super().launch(request)
        finally:
            for fd in (stdin, stdout, stderr):
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            with os.fdopen(to_stdin, "wb") as head:
                head.write(request.stdin)
        except BrokenPipeError:  # read by SERVICE; gone if prepare failed
            pass
        with os.fdopen(from_stdout, "rb") as out, os.fdopen(from_stderr, "rb") as err:
            answer, said = out.read(), err.read()  # both end when the shell turns its output to the log, or exits
        if answer.strip():
            _thread.start_new_thread(_reap, (pid,))
            code = 0
        else:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return ScriptResult(code, answer.decode(errors="replace"), said.decode(errors="replace"))

    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        return tcp_connect(host, port, timeout)

    def process_start_time(self, pid: int) -> str | None:
        """Checked in-process, not through sh: the launcher polls this while a service starts."""
        return owned_identity(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
