"""The front half of a tunnel run, in the caller's process: start the keeper, relay its one-line result.

The keeper is detached from the start (its own session on POSIX, its own
process group on Windows) so nothing that ends this process ends the tunnel,
yet it shares our terminal (stdin, stderr) for progress and login prompts:
without a controlling terminal, `getpass` reads stdin with echo switched off
there. No fork (unsafe with threads, absent on Windows) and no shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .. import statefiles
from ..clientfile import keeper_log_path
from ..config import Config
from ..errors import LauncherError, TunnelError
from ..progress import Progress
from ..statefiles import ClientPayload

INTERRUPT_WAIT = 5.0


def start_keeper(config: Config, key: str, client_path: Path, progress: Progress) -> tuple[ClientPayload, bool]:
    """Run the keeper until it reports; (payload, whether an existing keeper was reused)."""
    directory = client_path.parent
    statefiles.ensure_private_dir(directory)
    fd, config_file = tempfile.mkstemp(prefix=f".{key}.keeper-config.", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp's file is 0600: file_parameters stay private
        # YAML values JSON lacks (dates) travel as str(), which is also what templates render of them
        json.dump(dict(config.raw), handle, default=str)
    argv = [sys.executable, "-m", "remote_http_launcher.keeper", "--key", key,
            "--config-file", config_file, "--connection-dir", str(directory),
            "--progress", progress.level, "--elapsed", f"{progress.elapsed():.3f}"]
    argv += ["--quiet"] * progress.quiet + ["--live"] * progress.live
    progress.close()
    try:
        with _terminal_mode_restored(sys.stdin):
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, **_detached())
            assert proc.stdout is not None
            try:
                line = proc.stdout.readline()
            except BaseException:  # Ctrl-C reaches us, not the keeper in its own session
                proc.terminate()
                try:
                    proc.wait(INTERRUPT_WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
            finally:
                proc.stdout.close()
    finally:
        statefiles.remove(directory / os.path.basename(config_file))
    try:
        payload, reused = _result(line, proc, key, client_path)
    except LauncherError:
        _wait_exited(proc)  # it reported its error and is exiting: leave no keeper process (or zombie) behind
        raise
    if reused:  # it only reported another keeper's tunnel and is exiting: never two keeper processes after us
        _wait_exited(proc)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it whenever it ends: no zombie in run() callers
    return payload, reused


def _wait_exited(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(INTERRUPT_WAIT)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def _terminal_mode_restored(stream: TextIO | None) -> Iterator[None]:
    """Put the terminal's mode back afterwards: a keeper stopped mid-prompt may leave echo off."""
    saved: list[Any] | None = None
    if os.name == "posix" and stream is not None:
        import termios

        try:
            fd = stream.fileno()
            saved = termios.tcgetattr(fd) if os.isatty(fd) else None
        except (OSError, ValueError, termios.error):
            saved = None
    try:
        yield
    finally:
        if saved is not None:
            try:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            except (OSError, termios.error):
                pass


def _detached() -> dict[str, Any]:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def _result(line: bytes, proc: subprocess.Popen[bytes], key: str,
            client_path: Path) -> tuple[ClientPayload, bool]:
    """The keeper's payload, or its error rebuilt as the same class with the same fields."""
    result = statefiles.decode(line)
    if result is None:
        try:
            code: int | str | None = proc.wait(INTERRUPT_WAIT)
        except subprocess.TimeoutExpired:
            code = "still running"
        raise TunnelError(f"{key}: the tunnel keeper ended without a result (exit code {code}); "
                          f"see {keeper_log_path(client_path)}", key=key, step="tunnel keeper")
    if "error" in result:
        raise LauncherError.from_dict(result)
    return result["payload"], bool(result.get("reused"))
