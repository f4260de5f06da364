"""ProxyCommand as a socket for paramiko, on POSIX and on Windows.

paramiko's own ProxyCommand waits on the command's stdout with select(),
which Windows does not offer for pipes. Here a thread reads the command's
stdout into a buffer and `recv` waits on that buffer with the timeout paramiko
sets, so the same code serves both. The command runs as OpenSSH runs it:
through `sh -c 'exec COMMAND'` on POSIX (so pipes and quotes work), as one
command line (CreateProcess, no shell) on Windows.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from ..processes import terminate

READ_SIZE = 65536
CLOSE_WAIT = 2.0


class CommandSocket:
    """The byte stream of a running ProxyCommand: what paramiko's Transport needs of a socket."""

    def __init__(self, command: str) -> None:
        argv: str | list[str] = command if sys.platform == "win32" else ["/bin/sh", "-c", f"exec {command}"]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.timeout: float | None = None
        self.closed = False
        self._buffer = bytearray()
        self._ended = False
        self._ready = threading.Condition()
        threading.Thread(target=self._pump, name="rhl-proxycommand", daemon=True).start()

    def _pump(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            try:
                data = stdout.read(READ_SIZE)  # unbuffered: returns what is there (b"" at the end)
            except (OSError, ValueError):
                data = b""
            with self._ready:
                if data:
                    self._buffer += data
                else:
                    self._ended = True
                self._ready.notify_all()
            if not data:
                return

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes; b"" once the command's output ended; TimeoutError after `timeout` seconds."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._buffer or self._ended or self.closed, self.timeout):
                raise TimeoutError("no data from ProxyCommand")
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def send(self, data: bytes) -> int:
        stdin = self.process.stdin
        if self.closed or stdin is None:
            raise OSError("ProxyCommand is closed")
        try:
            stdin.write(data)
            stdin.flush()
        except (OSError, ValueError) as exc:
            raise OSError(f"ProxyCommand ended ({exc})") from None
        return len(data)

    @property
    def _closed(self) -> bool:
        """A socket's private flag, which paramiko's Transport.stop_thread polls on whatever it was given."""
        return self.closed

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def close(self) -> None:
        if self.closed:
            return
        with self._ready:
            self.closed = True
            self._ready.notify_all()
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        self.process.terminate()
        try:
            self.process.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:  # our own child, not reaped yet: its PID is still its own
            terminate(self.process.pid, force=True)
            self.process.wait(CLOSE_WAIT)
