"""The front half of a tunnel run, in the caller's process: start the keeper and talk to it until it reports.

The keeper is detached from the start (its own session on POSIX, its own
process group on Windows) so nothing that ends this process ends the tunnel.
It talks to us through the daemons' JSON-lines relay (tunnels/daemon.py); its
result line is {"payload": ..., "reused": B} or an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .. import statefiles
from ..clientfile import keeper_log_path
from ..config import Config
from ..errors import LauncherError, TunnelError
from ..progress import Progress
from ..prompts import Prompt
from ..ssh import dialahead
from ..statefiles import ClientPayload
from ..tunnels.daemon import INTERRUPT_WAIT, config_json, converse, popen_detached, wait_exited
from ..tunnels.lock import MARKER


def start_keeper(config: Config, key: str, client_path: Path, progress: Progress,
                 prompt: Prompt | None, *, accept_new_host_key: bool = False) -> tuple[ClientPayload, bool]:
    """Run the keeper until it reports; (payload, whether an existing keeper was reused).

    Without `prompt` the keeper asks nothing: login steps that need an answer are skipped.
    """
    directory = client_path.parent
    statefiles.ensure_private_dir(directory)
    fd, config_file = tempfile.mkstemp(prefix=f".{key}.keeper-config.", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp's file is 0600: file_parameters stay private
        handle.write(config_json(config))
    argv = [sys.executable, "-m", MARKER, "--key", key,
            "--config-file", config_file, "--connection-dir", str(directory)]
    argv += ["--ask"] * (prompt is not None) + ["--accept-new-host-key"] * accept_new_host_key
    argv += dialahead.dial_arguments(config.ssh_target)
    try:
        proc = popen_detached(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            result = converse(proc, progress, prompt)
        except BaseException:  # Ctrl-C reaches us, not the keeper in its own session: end it too
            proc.terminate()
            wait_exited(proc, kill=True)
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
        wait_exited(proc)  # it reported its error and is exiting: leave no keeper process (or zombie) behind
        raise
    if reused:  # it only reported another keeper's tunnel and is exiting: never two keeper processes after us
        wait_exited(proc)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it whenever it ends: no zombie in run() callers
    return payload, reused


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
