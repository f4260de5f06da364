"""What the keeper process and the broker share as detached daemons, and the front half that starts them.

A daemon never reads a terminal: its phases and login questions go to the
front process (the command that started it) as JSON lines on the pipe it got
as stdout, the answers come back as JSON lines on its stdin, and its result
is the last line:

  daemon -> front  {"phase": TEXT}                 a progress phase, shown by the front's Progress
                   {"prompt": TEXT, "secret": B}   a login question, asked through the front's prompt function
                   RESULT                          the last line: the daemon's own result, or an error
                                                   (LauncherError.to_dict)
  front -> daemon  {"answer": TEXT} or {"cancel": WHY}

So questions reach the user wherever the call was made (a terminal, a
Jupyter cell, a `prompt=` function), one answer per question, and no secret
travels on a command line. The front waits on a queue, not in a pipe read, so
Ctrl-C (or a kernel interrupt) ends the run promptly. No fork (unsafe with
threads, absent on Windows) and no shell. Then the daemon detaches its stdio
to its log.

A config crosses to a daemon as JSON (`config_json`): YAML values JSON lacks
(dates) travel as str(), which is also what templates render of them.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import IO, Any, NoReturn

from .. import statefiles
from ..config import Config, load_config
from ..progress import REDRAW_INTERVAL, Progress
from ..prompts import Prompt

INTERRUPT_WAIT = 5.0
PREVIOUS_LOG_SUFFIX = ".1"  # the log of the run before, kept by open_log(keep_previous=True)
# Windows process creation flags (named here: subprocess has them only on Windows).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
MAX_LINE = 1 << 20  # a daemon's line is small; anything longer is not from our daemon
log = logging.getLogger("remote_http_launcher.tunnel")


def config_json(config: Config) -> str:
    """The config as a daemon reads it back (`read_config`)."""
    return json.dumps(dict(config.raw), default=str)


def read_config(path: Path) -> Config:
    """The config the command validated, from the file it wrote (deleted once read); its warnings were
    shown there already."""
    try:
        data = json.loads(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    return config_from(data)


def config_from(data: Any) -> Config:
    """A config sent by a command (`config_json`), validated again without repeating its warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_config(data)


class Report:
    """Our lines to the front process (keeper/start.py has the protocol); a front that went away is not an error.

    Phases and questions come first, the result last; the front answers questions on our stdin.
    """

    def __init__(self) -> None:
        self.fd: int | None = os.dup(1)
        os.dup2(2, 1)  # stray prints must not corrupt our lines
        self._lock = threading.Lock()  # phases come from the launcher's threads too

    def message(self, message: dict[str, Any]) -> bool:
        """Send one line; False when there is no front to send it to."""
        with self._lock:
            if self.fd is None:
                return False
            try:
                os.write(self.fd, (json.dumps(message) + "\n").encode())
            except OSError:
                return False
            return True

    def send(self, result: dict[str, Any]) -> None:
        """The last line: the result or the error."""
        self.message(result)
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def ask(self, text: str, secret: bool) -> str:
        """A login question for the front, which asks it where the user called from and sends the answer."""
        if not self.message({"prompt": text, "secret": secret}):
            raise EOFError("the run that started the tunnel keeper is gone")
        line = sys.stdin.buffer.readline()
        reply = json.loads(line) if line.strip() else {}
        if not isinstance(reply, dict) or not isinstance(reply.get("answer"), str):
            raise EOFError(str(reply.get("cancel", "no answer")) if isinstance(reply, dict) else "no answer")
        return str(reply["answer"])


class RelayedProgress(Progress):
    """Phases go to our log and to the front process, which shows them (we never touch a terminal)."""

    def __init__(self, report: Report) -> None:
        super().__init__(quiet=True, live=False)
        self.report = report

    def phase(self, text: str) -> None:
        super().phase(text)
        self.report.message({"phase": text})


def exit_on_signal(signum: int, frame: Any) -> NoReturn:
    signal.signal(signum, signal.SIG_IGN)  # one cleanup only
    raise SystemExit(128 + signum)


def open_log(path: Path, *, keep_previous: bool = False) -> int:
    """Truncate and open our log (0600, never through a symbolic link); the package's log records go there.
    With `keep_previous`, the last run's log is first renamed `<log>.1`: why a dead process died. Its fd,
    for `detach`."""
    if keep_previous:
        try:
            os.replace(path, path.with_name(path.name + PREVIOUS_LOG_SUFFIX))
        except FileNotFoundError:
            pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, statefiles.FILE_MODE)
    handler = logging.StreamHandler(os.fdopen(os.dup(fd), "a", buffering=1, encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("remote_http_launcher")
    root.setLevel(logging.INFO)
    root.propagate = False
    root.addHandler(handler)
    return fd


def detach(log_fd: int) -> None:
    """Leave the user's terminal: stdin from /dev/null, stdout and stderr to our log (the keeper, the broker)."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)  # no console to leave: keeper/start.py starts us without one on Windows


def converse(proc: subprocess.Popen[bytes], progress: Progress, prompt: Prompt | None) -> dict[str, Any] | None:
    """Show the keeper's phases, answer its questions; its last line (None if it ended without one)."""
    assert proc.stdout is not None and proc.stdin is not None
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True, name="rhl-keeper-out").start()
    while True:
        try:
            line = lines.get(timeout=REDRAW_INTERVAL)
        except queue.Empty:
            progress.tick()
            continue
        message = statefiles.decode(line)
        if message is None:
            return None
        if "phase" in message:
            progress.phase(str(message["phase"]))
        elif "prompt" in message:
            _answer(proc.stdin, str(message["prompt"]), bool(message.get("secret", True)), progress, prompt)
        else:
            return message


def _answer(stdin: IO[bytes], text: str, secret: bool, progress: Progress, prompt: Prompt | None) -> None:
    reply: dict[str, str]
    if prompt is None:
        reply = {"cancel": "nowhere to ask"}
    else:
        progress.close()  # the question starts on a line of its own
        try:
            reply = {"answer": prompt(text, secret)}
        except Exception as exc:  # no answer: the keeper gives that login step up
            reply = {"cancel": str(exc) or type(exc).__name__}
    try:
        stdin.write(json.dumps(reply).encode() + b"\n")
        stdin.flush()
    except OSError:
        pass  # the keeper is gone: its last line (or its absence) says why


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    try:
        while line := stream.readline(MAX_LINE):
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(b"")  # the end


def wait_exited(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    try:
        proc.wait(INTERRUPT_WAIT)
    except subprocess.TimeoutExpired:
        if kill:
            proc.kill()


def popen_detached(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a process that nothing ending this one ends: its own session on POSIX; on Windows no console,
    its own process group (no Ctrl-C from our console), and out of our job object, which Windows Terminal
    and VS Code's terminals kill with the tab. A job that forbids breaking away refuses the start: then
    without it (the fallback is logged; closing that terminal then ends the tunnel)."""
    if sys.platform != "win32":
        return subprocess.Popen(argv, start_new_session=True, **options)
    flags = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
    try:
        return subprocess.Popen(argv, creationflags=flags | CREATE_BREAKAWAY_FROM_JOB, **options)
    except OSError as exc:
        log.info("a detached process cannot leave this terminal's job (%s); started inside it: closing the "
                 "terminal ends the tunnel", exc)
        return subprocess.Popen(argv, creationflags=flags, **options)


