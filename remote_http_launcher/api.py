"""The Python API: the same operations as the command line (commands/), returning plain data.

Only the warm path's modules are imported until it misses (commands/up.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import logsetup
from .commands.up import PathLike, up
from .config import Config, LogOptions, load_config
from .errors import HostKeyError
from .progress import Progress
from .service import STOP_TIMEOUT
from .statefiles import ClientPayload

if TYPE_CHECKING:
    from .commands.status import StatusResult
    from .prompts import Prompt
    from .render import StopOutcome

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]


def run(config: ConfigSource, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
        prompt: Prompt | None = None, accept_new_host_key: bool = False) -> dict[str, Any]:
    """Launch the service described by `config`, or reconnect to it; return the client payload.

    `config` is a mapping or the path of a YAML file. The payload is what the
    client connection file holds (`hostname`, `port`, ...). Errors raise
    `LauncherError` subclasses carrying one-line messages.

    With `tunnel: true` the tunnel is not kept by this process but by the same
    detached keeper process the command line uses (`keeper_pid` in the
    payload), so the client file stays valid for other processes after this
    one exits. The keeper ends when the service does, or with `stop()`.

    Login questions (a password, a one-time code, a key's passphrase, an
    unknown host key) go to `prompt(text, secret) -> answer` when given, else
    to this process's terminal, else to the input box of the Jupyter cell
    running the call; with none of these, those login steps are skipped and
    the error says so. The tunnel keeper asks through this call too.
    `accept_new_host_key` records the key of a host not yet in known_hosts
    without asking (StrictHostKeyChecking accept-new); a changed key is
    refused all the same.

    In a script nothing is printed unless asked: `progress`, or the config's
    `log_level` (`basic`: phase lines on stderr; `minimal`: a live line on a
    terminal; `debug`: a debug log on stderr); in a Jupyter cell the phases
    show as one display updated in place. `log_file` and `debug_log_file` are
    written as with the command-line flags of the same names.
    """
    return dict(launched(config, connection_dir=connection_dir, progress=progress, prompt=prompt,
                         accept_new_host_key=accept_new_host_key)[1])


def launched(config: ConfigSource, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
             prompt: Prompt | None = None, accept_new_host_key: bool = False,
             call: str = "run") -> tuple[Config, ClientPayload]:
    """`run()`, also giving the validated config (for `launch()`'s handle, which would otherwise load it again).
    `call`: the function the user called, as an unknown host key's error names it."""
    loaded = load_config(config, cache=True)
    detach = logsetup.configure(logsetup.merge(LogOptions(), loaded.log))
    try:
        if progress is None:  # the config's log_level, as on the command line; in a Jupyter cell, a live display
            progress = Progress.for_run(loaded.log.level, sys.stderr)
        return loaded, up(loaded, connection_dir=connection_dir, progress=progress, prompt=prompt,
                          accept_new_host_key=accept_new_host_key)[0]
    except BaseException as exc:
        if progress is not None:  # no live line left saying the call still works
            progress.failed("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        if isinstance(exc, HostKeyError):
            raise exc.advising(f"{call}(..., accept_new_host_key=True)") from None
        raise
    finally:
        detach()


def status(config: ConfigSource, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
           prompt: Prompt | None = None) -> StatusResult:
    """Where the service stands: `status` is absent, starting, running, failed or stale.

    Also `pid`, `port`, `uptime` (seconds), `workdir`, `log`, `status_file`, and
    `client` (connection file path, whether present, local port, tunnel keeper
    PID and whether it is alive). Without a handshake, `port_listener` says whether the service's own
    processes listen on `port` ("verified"), another process does ("not the service's"), or the host
    cannot tell ("unverified": no /proc). Connects to the host for SSH configs.
    """
    from .commands import status as command

    return command.status(load_config(config), connection_dir=connection_dir, progress=progress, prompt=prompt)


def stop(config: ConfigSource, *, connection_dir: PathLike | None = None, timeout: float = STOP_TIMEOUT,
         keep_log: bool = False, progress: Progress | None = None, prompt: Prompt | None = None) -> StopOutcome:
    """Stop the service (SIGTERM, then SIGKILL after `timeout` s) and its tunnel keeper; remove its state.

    Only the process that was launched is signalled (PID and start time must
    match). Stopping a stopped service succeeds: `stopped` is then False and
    `message` says "not running; nothing to stop". The service's log and the
    tunnel keeper's are removed (`logs_removed`) unless `keep_log`.
    """
    from .commands import stop as command
    from .render import stop_outcome

    return stop_outcome(command.stop(load_config(config), connection_dir=connection_dir, timeout=timeout,
                                    keep_log=keep_log, progress=progress, prompt=prompt))


def logs(config: ConfigSource, *, tail: int = 50, tail_bytes: int | None = None,
         prompt: Prompt | None = None) -> str:
    """The last `tail` lines of the service log, from its last `tail_bytes` bytes at most (default 1 MiB:
    `commands.logs.TAIL_MAX_BYTES`); raises
    `NotRunningError` (exit code 3) when there is none."""
    from .commands import logs as command

    return command.logs(load_config(config), tail=tail, tail_bytes=tail_bytes, prompt=prompt)
