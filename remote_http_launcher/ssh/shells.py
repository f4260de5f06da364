"""Persistent remote `sh` sessions: a script in one round trip instead of two.

An exec channel costs a round trip to open and another for the command and
its output. A kept `sh` (an exec channel running plain `sh`: nothing is
installed on the server) only needs the second: the request block goes down
its stdin and the result comes back in one flight. The broker keeps a few
(`ShellPool`), one request at a time each.

Framing of one request (the values are shlex-quoted, never interpolated):

    printf '%s\\n' TOKEN.started
    sh -c SCRIPT sh ARGS... >"$d/o" 2>"$d/e" <<'DELIMITER'
    STDIN TEXT
    DELIMITER
    rc=$?
    printf '%s %s %s %s\\n' TOKEN "$rc" $(wc -c <"$d/o") $(wc -c <"$d/e")
    cat "$d/o" "$d/e"; printf '%s\\n' TOKEN.end

`$d` is the session's private directory (`mktemp -d`: mode 0700), removed
when the session's stdin closes, or by a later session once its `sh` is gone. The output sizes make the reply
binary-safe; the random TOKEN (new per request) skips anything the login
shell printed first. A request the fast path cannot take exactly (stdin that
is not text ending in a newline, as a here-document has), no free session,
or a session that died before it started the script give None: the caller
runs the script in an exec channel instead, so a broken fast path never
fails a call. A session that dies while the script runs raises EOFError (the
script may have run: it is not repeated; SSHHost reports exit status -1, as
for an exec channel whose shell was killed).
"""

from __future__ import annotations

import logging
import secrets
import shlex
import threading

from ._paramiko import paramiko, send_channel_request

MAX_SHELLS = 4  # the broker serves commands on threads; more than this at once use exec channels
MAX_FAILED_STARTS = 3  # a server whose `sh` sessions keep dying (no mktemp?): stop trying them
# The session's directory is named after its sh (`rhl-sh.PID.RANDOM`), so a session that died without its
# EXIT trap (SIGKILL, a dropped link's SIGPIPE) leaves one a later session of ours finds and removes.
SESSION_SETUP = ('t=${TMPDIR:-/tmp}\n'
                 'for s in "$t"/rhl-sh.*; do\n'
                 '  p=${s#"$t"/rhl-sh.}; p=${p%%.*}\n'
                 '  case $p in ""|*[!0-9]*) continue ;; esac\n'
                 '  if [ -O "$s" ] && [ ! -L "$s" ] && ! kill -0 "$p" 2>/dev/null; then rm -rf -- "$s"; fi\n'
                 'done\n'
                 'd=$(mktemp -d "$t/rhl-sh.$$.XXXXXXXX") || exit 1\n'
                 "trap 'rm -rf \"$d\"' EXIT\n"
                 "trap 'exit 1' HUP TERM\n")
log = logging.getLogger("remote_http_launcher.ssh")


class Shell:
    """One remote `sh` session; `run` is not thread-safe (the pool hands a shell to one caller at a time)."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.buffer = b""
        self.set_up = False  # SESSION_SETUP was sent
        self.proven = False  # a request was answered: the session starts a script at once

    @property
    def alive(self) -> bool:
        return not (self.channel.closed or self.channel.eof_received or self.channel.exit_status_ready())

    def run(self, script: str, args: list[str], text: str, reply_timeout: float,
            timeout: float) -> tuple[int, bytes, bytes] | None:
        """(exit status, stdout, stderr) of `sh -c SCRIPT sh ARGS...` fed `text` (see `heredoc_text`); None when
        the session ended before it started the script. A proven session says it started the script within
        `reply_timeout` (else the link is silent: TimeoutError); a new one may first run the login shell's
        start-up files (~/.bashrc: seconds on some clusters), as an exec channel does, so it gets `timeout`,
        the limit of the whole script."""
        token = secrets.token_hex(12)
        delimiter = f"RHL_EOF_{secrets.token_hex(12)}"
        while delimiter in text:
            delimiter = f"RHL_EOF_{secrets.token_hex(12)}"
        block = (f"printf '%s\\n' {token}.started\n"
                 f"{shlex.join(['sh', '-c', script, 'sh', *args])} >\"$d/o\" 2>\"$d/e\" <<'{delimiter}'\n"
                 f"{text}{delimiter}\n"
                 "rc=$?\n"
                 f"printf '%s %s %s %s\\n' {token} \"$rc\" $(wc -c <\"$d/o\") $(wc -c <\"$d/e\")\n"
                 f"cat \"$d/o\" \"$d/e\"; printf '%s\\n' {token}.end\n")
        if not self.set_up:
            block = SESSION_SETUP + block
        waited = reply_timeout if self.proven else timeout
        self.channel.settimeout(waited)
        try:
            self.channel.sendall(block.encode())
            self.set_up = True
            self._line_with(f"{token}.started\n".encode())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no answer within {waited:g} s") from None
            log.debug("a kept sh session ended before a script: %s", exc.__class__.__name__)
            return None
        self.channel.settimeout(timeout)
        try:
            header = self._line_with(f"{token} ".encode()).split()
            code, out_size, err_size = (int(word) for word in header)
            output = self._exactly(out_size + err_size)
            if self._exactly(len(token) + 5) != f"{token}.end\n".encode():
                raise EOFError("the shell session's reply was garbled")
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        except (ValueError, paramiko.SSHException) as exc:
            raise EOFError(f"the shell session failed ({exc})") from None
        self.proven = True
        return code, output[:out_size], output[out_size:]

    def _line_with(self, start: bytes) -> bytes:
        """The rest of the line that begins with `start`; what comes before it (greetings) is dropped."""
        while True:
            at = self.buffer.find(start)
            if at >= 0 and (at == 0 or self.buffer[at - 1:at] == b"\n"):
                end = self.buffer.find(b"\n", at)
                if end >= 0:
                    line, self.buffer = self.buffer[at + len(start):end], self.buffer[end + 1:]
                    return line
            self._receive()

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._receive()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _receive(self) -> None:
        data = self.channel.recv(65536)
        if not data:
            raise EOFError("the shell session ended")
        self.buffer += data

    def close(self) -> None:
        """End of stdin: the session removes its directory and exits."""
        try:
            self.channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self.channel.close()


class ShellPool:
    """Up to MAX_SHELLS idle `sh` sessions on one transport, opened on demand."""

    def __init__(self, transport: paramiko.Transport, open_timeout: float) -> None:
        self.transport = transport
        self.open_timeout = open_timeout
        self.idle: list[Shell] = []
        self.busy = 0
        self.failed_starts = 0
        self.closed = False
        self.lock = threading.Lock()

    def run(self, script: str, args: list[str], stdin: bytes, reply_timeout: float,
            timeout: float) -> tuple[int, bytes, bytes] | None:
        """Run on an idle session (or a new one); None when none could take it (see the module docstring).
        TimeoutError: the session did not answer (see Shell.run)."""
        text = heredoc_text(stdin)
        shell = self._take() if text is not None else None
        if shell is None or text is None:
            return None
        fresh = not shell.set_up
        try:
            result = shell.run(script, args, text, reply_timeout, timeout)
        except BaseException:
            shell.close()  # mid-request: its stream position is unknown
            self._release(None)
            raise
        if result is None:
            shell.close()
            self._release(None, failed_start=fresh)
        else:
            self._release(shell)
        return result

    def warm(self) -> None:
        """Open one session ahead of use, so the first script costs one round trip too."""
        shell = self._take()
        if shell is not None:
            self._release(shell)

    def _take(self) -> Shell | None:
        with self.lock:
            while self.idle:
                shell = self.idle.pop()
                if shell.alive:
                    self.busy += 1
                    return shell
                shell.close()
            if self.closed or self.busy >= MAX_SHELLS or self.failed_starts >= MAX_FAILED_STARTS:
                return None
            self.busy += 1
        try:
            channel = self.transport.open_session(timeout=self.open_timeout)
            channel.set_combine_stderr(True)  # the session's own complaints must not fill a window no one reads
            # Not waited for: the first request follows in the same flight; a refusal closes the channel,
            # which the first request sees before its script started (None: an exec channel instead).
            send_channel_request(channel, "exec", "sh")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._release(None)
            log.debug("no kept sh session: %s: %s", exc.__class__.__name__, exc)
            return None
        return Shell(channel)

    def _release(self, shell: Shell | None, *, failed_start: bool = False) -> None:
        with self.lock:
            self.busy -= 1
            if failed_start:
                self.failed_starts += 1
                log.info("a remote sh session ended before its first script (%d)", self.failed_starts)
            elif shell is not None and shell.set_up:
                self.failed_starts = 0
            if shell is None:
                return
            if self.closed or not shell.alive:
                shell.close()
            else:
                self.idle.append(shell)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for shell in idle:
            shell.close()


def heredoc_text(stdin: bytes) -> str | None:
    """`stdin` as a here-document's body, which is text ending in a newline (or empty); None if it is not."""
    if not stdin:
        return ""
    if not stdin.endswith(b"\n") or b"\0" in stdin:
        return None
    try:
        return stdin.decode()
    except UnicodeDecodeError:
        return None
