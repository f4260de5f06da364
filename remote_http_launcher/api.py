"""The Python API: the same operations as the command line, returning plain data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import load_config
from .launcher import Launcher
from .processes import STOP_TIMEOUT
from .progress import Progress

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]


def run(config: ConfigSource, *, connection_dir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Launch the service described by `config`, or reconnect to it; return the client payload.

    `config` is a mapping or the path of a YAML file. The payload is what the
    client connection file holds (`hostname`, `port`, ...). Errors raise
    `LauncherError` subclasses carrying one-line messages.

    With `tunnel: true` the tunnel is not kept by this process but by the same
    detached keeper process the command line uses (`keeper_pid` in the
    payload), so the client file stays valid for other processes after this
    one exits. The keeper ends when the service does, or with `stop()`. Login
    prompts, if any, appear on this process's terminal (stdin and stderr).
    """
    return Launcher(load_config(config), connection_dir=connection_dir, progress=progress).up()


def status(config: ConfigSource, *, connection_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Where the service stands: `status` is absent, starting, running, failed or stale.

    Also `pid`, `port`, `uptime` (seconds), `workdir`, `log`, `status_file`, and
    `client` (connection file path, whether present, local port, tunnel keeper
    PID and whether it is alive). Connects to the host for SSH configs.
    """
    from . import lifecycle

    return lifecycle.status(load_config(config), connection_dir=connection_dir)


def stop(config: ConfigSource, *, connection_dir: str | os.PathLike[str] | None = None,
         timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
    """Stop the service (SIGTERM, then SIGKILL after `timeout` s) and its tunnel keeper; remove its state.

    Only the process that was launched is signalled (PID and start time must
    match). Stopping a stopped service succeeds: `stopped` is then False and
    `message` says "not running; nothing to stop". The log is kept.
    """
    from . import lifecycle

    return lifecycle.stop(load_config(config), connection_dir=connection_dir, timeout=timeout)


def logs(config: ConfigSource, *, tail: int = 50) -> str:
    """The last `tail` lines of the service log; raises `LauncherError` (exit code 3) when there is none."""
    from . import lifecycle

    return lifecycle.logs(load_config(config), tail=tail)
