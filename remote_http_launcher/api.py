"""The Python API: the same operations as the command line, returning plain data.

`up` decides how a run goes: reuse the client file (the warm path), or have a
tunnel keeper process run the launcher (`tunnel: true`: the tunnel must
outlive this process), or run the launcher here. Only the warm path's modules
are imported until it misses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import clientfile, logsetup, statefiles
from .config import Config, LogOptions, evaluate_command, evaluate_key, load_config, remember_parse
from .progress import Progress
from .service import STOP_TIMEOUT
from .statefiles import ClientPayload

if TYPE_CHECKING:
    from .manage import StatusResult
    from .prompts import Prompt
    from .render import StopOutcome

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]
PathLike = str | os.PathLike[str]


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
             prompt: Prompt | None = None, accept_new_host_key: bool = False) -> tuple[Config, ClientPayload]:
    """`run()`, also giving the validated config (for `launch()`'s handle, which would otherwise load it again)."""
    loaded = load_config(config, cache=True)
    detach = logsetup.configure(logsetup.merge(LogOptions(), loaded.log))
    try:
        if progress is None:  # the config's log_level, as on the command line; in a Jupyter cell, a live display
            progress = Progress.for_run(loaded.log.level, sys.stderr)
        return loaded, up(loaded, connection_dir=connection_dir, progress=progress, prompt=prompt,
                          accept_new_host_key=accept_new_host_key)[0]
    finally:
        detach()


def up(config: Config, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
       prompt: Prompt | None = None, accept_new_host_key: bool = False) -> tuple[ClientPayload, bool]:
    """The client payload, and whether an existing connection was reused (steps 1-5)."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    dry_run(config, key)  # a bad command template fails here, before any file is read, written or started
    client_path = statefiles.client_file(key, connection_dir, local_service=not config.remote)
    progress.phase("checking connection file")
    payload = clientfile.reuse(client_path, config.handshake)
    reused = payload is not None
    if payload is None and config.tunnel:
        tunneled = None
        if config.connection_persist > 0:  # the destination's broker keeps the forwards; else a keeper process
            from .broker.tunnels import run_tunnel

            tunneled = run_tunnel(config, key, client_path, progress, _asking(prompt, progress),
                                  accept_new_host_key=accept_new_host_key)
        if tunneled is None:
            from .keeper.start import start_keeper

            tunneled = start_keeper(config, key, client_path, progress, _asking(prompt, progress),
                                    accept_new_host_key=accept_new_host_key)
        payload, reused = tunneled
    elif payload is None:
        from .connect import open_host  # host machinery (subprocess, SSH) only once the warm path missed
        from .launcher import Launcher, check_direct_reachable

        check_direct_reachable(config)
        progress.phase(f"connecting to {config.ssh_target}" if config.remote else "checking server state")
        with open_host(config, _asking(prompt, progress), accept_new_host_key=accept_new_host_key) as host:
            payload = Launcher(config, key, client_path, progress).serve(host)[0]
    progress.done(payload, reused=reused)
    remember_parse(config)
    return payload, reused


def _asking(prompt: Prompt | None, progress: Progress) -> Prompt | None:
    """Where login questions go (`prompt`, the terminal, a Jupyter cell), each after the live line ends."""
    from . import prompts

    return prompts.before_asking(prompt or prompts.default(), progress.close)


def dry_run(config: Config, key: str | None = None) -> str:
    """The command a launch would run; nothing is connected, written or started.

    For a local service that is exactly the command (`workdir` and the status file absolute). For a
    remote one, `~` stands for the SSH user's home, which only a connection would tell.
    """
    key = key or evaluate_key(config)
    if config.remote:
        return evaluate_command(config, key, f"{statefiles.REMOTE_STATE_DIR}/{key}.json")
    state_dir = str(statefiles.local_server_dir().absolute())
    return evaluate_command(config, key, f"{state_dir}/{key}.json", os.path.expanduser(config.workdir))


def status(config: ConfigSource, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
           prompt: Prompt | None = None) -> StatusResult:
    """Where the service stands: `status` is absent, starting, running, failed or stale.

    Also `pid`, `port`, `uptime` (seconds), `workdir`, `log`, `status_file`, and
    `client` (connection file path, whether present, local port, tunnel keeper
    PID and whether it is alive). Without a handshake, `port_listener` says whether the service's own
    processes listen on `port` ("verified"), another process does ("not the service's"), or the host
    cannot tell ("unverified": no /proc). Connects to the host for SSH configs.
    """
    from . import manage

    return manage.status(load_config(config), connection_dir=connection_dir, progress=progress, prompt=prompt)


def stop(config: ConfigSource, *, connection_dir: PathLike | None = None, timeout: float = STOP_TIMEOUT,
         keep_log: bool = False, progress: Progress | None = None, prompt: Prompt | None = None) -> StopOutcome:
    """Stop the service (SIGTERM, then SIGKILL after `timeout` s) and its tunnel keeper; remove its state.

    Only the process that was launched is signalled (PID and start time must
    match). Stopping a stopped service succeeds: `stopped` is then False and
    `message` says "not running; nothing to stop". The service's log and the
    tunnel keeper's are removed (`logs_removed`) unless `keep_log`.
    """
    from . import manage
    from .render import stop_outcome

    return stop_outcome(manage.stop(load_config(config), connection_dir=connection_dir, timeout=timeout,
                                    keep_log=keep_log, progress=progress, prompt=prompt))


def logs(config: ConfigSource, *, tail: int = 50, prompt: Prompt | None = None) -> str:
    """The last `tail` lines of the service log; raises `NotRunningError` (exit code 3) when there is none."""
    from . import manage

    return manage.logs(load_config(config), tail=tail, prompt=prompt)
