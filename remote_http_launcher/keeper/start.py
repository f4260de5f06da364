"""The front half of a tunnel run, in the caller's process: start the keeper and talk to it until it reports.

The keeper is detached from the start (its own session on POSIX, its own
process group on Windows) so nothing that ends this process ends the tunnel.
It never touches a terminal: everything it has to say or ask comes here as
JSON lines on its stdout, and answers go back as JSON lines on its stdin:

  keeper -> here   {"phase": TEXT}                 a progress phase, shown by our Progress
                   {"prompt": TEXT, "secret": B}   a login question, asked through our prompt function
                   {"payload": ..., "reused": B}   the result (last line), or an error (LauncherError.to_dict)
  here -> keeper   {"answer": TEXT} or {"cancel": WHY}

So questions reach the user wherever the call was made (a terminal, a
Jupyter cell, a `prompt=` function), one answer per question, and no secret
travels on a command line. We wait on a queue, not in a pipe read, so Ctrl-C
(or a kernel interrupt) ends the run promptly, and the keeper with it. No fork
(unsafe with threads, absent on Windows) and no shell.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from .. import statefiles
from ..clientfile import keeper_log_path
from ..config import Config
from ..errors import LauncherError, TunnelError
from ..progress import REDRAW_INTERVAL, Progress
from ..prompts import Prompt
from ..statefiles import ClientPayload

INTERRUPT_WAIT = 5.0
LOGGER = "remote_http_launcher.keeper"
# Windows process creation flags (named here: subprocess has them only on Windows).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
MAX_LINE = 1 << 20  # a keeper's line is small; anything longer is not from our keeper


def start_keeper(config: Config, key: str, client_path: Path, progress: Progress,
                 prompt: Prompt | None, *, accept_new_host_key: bool = False) -> tuple[ClientPayload, bool]:
    """Run the keeper until it reports; (payload, whether an existing keeper was reused).

    Without `prompt` the keeper asks nothing: login steps that need an answer are skipped.
    """
    directory = client_path.parent
    statefiles.ensure_private_dir(directory)
    fd, config_file = tempfile.mkstemp(prefix=f".{key}.keeper-config.", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp's file is 0600: file_parameters stay private
        # YAML values JSON lacks (dates) travel as str(), which is also what templates render of them
        json.dump(dict(config.raw), handle, default=str)
    argv = [sys.executable, "-m", "remote_http_launcher.keeper", "--key", key,
            "--config-file", config_file, "--connection-dir", str(directory)]
    argv += ["--ask"] * (prompt is not None) + ["--accept-new-host-key"] * accept_new_host_key
    try:
        proc = popen_detached(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            result = _converse(proc, progress, prompt)
        except BaseException:  # Ctrl-C reaches us, not the keeper in its own session: end it too
            proc.terminate()
            _wait_exited(proc, kill=True)
            raise
        finally:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
    finally:
        statefiles.remove(directory / os.path.basename(config_file))
    try:
        payload, reused = _result(result, proc, key, client_path)
    except LauncherError:
        _wait_exited(proc)  # it reported its error and is exiting: leave no keeper process (or zombie) behind
        raise
    if reused:  # it only reported another keeper's tunnel and is exiting: never two keeper processes after us
        _wait_exited(proc)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it whenever it ends: no zombie in run() callers
    return payload, reused


def _converse(proc: subprocess.Popen[bytes], progress: Progress, prompt: Prompt | None) -> dict[str, Any] | None:
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


def _wait_exited(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
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
        import logging

        logging.getLogger(LOGGER).info("the tunnel keeper cannot leave this terminal's job (%s); started inside "
                                       "it: closing the terminal ends the tunnel", exc)
        return subprocess.Popen(argv, creationflags=flags, **options)


def _result(result: dict[str, Any] | None, proc: subprocess.Popen[bytes], key: str,
            client_path: Path) -> tuple[ClientPayload, bool]:
    """The keeper's payload, or its error rebuilt as the same class with the same fields."""
    if result is None or ("payload" not in result and "error" not in result):
        try:
            code: int | str | None = proc.wait(INTERRUPT_WAIT)
        except subprocess.TimeoutExpired:
            code = "still running"
        raise TunnelError(f"{key}: the tunnel keeper ended without a result (exit code {code}); "
                          f"see {keeper_log_path(client_path)}", key=key, step="tunnel keeper")
    if "error" in result:
        raise LauncherError.from_dict(result)
    return result["payload"], bool(result.get("reused"))
