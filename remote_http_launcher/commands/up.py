"""`up` (the default command): the client payload of a service, reusing, reconnecting or launching it.

It decides how a run goes: reuse the client file (the warm path), or have
the destination's broker keep the tunnel, or a tunnel keeper process run the
launcher (`tunnel: true`: the tunnel must outlive this process), or run the
launcher here. Only the warm path's modules are imported until it misses.
"""

from __future__ import annotations

import os

from .. import clientfile, statefiles
from ..config import Config, evaluate_command, evaluate_key, remember_parse
from ..progress import Progress
from ..statefiles import ClientPayload

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from ..prompts import Prompt

PathLike = str | os.PathLike[str]


def up(config: Config, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
       prompt: Prompt | None = None, accept_new_host_key: bool = False) -> tuple[ClientPayload, bool]:
    """The client payload, and whether an existing connection was reused (steps 1-5)."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    if config.known_key is None:  # a kept parse's command evaluated when its run succeeded
        dry_run(config, key)  # a bad command template fails here, before any file is read, written or started
    client_path = statefiles.client_file(key, connection_dir, local_service=not config.remote)
    progress.phase("checking connection file")
    payload = clientfile.reuse(client_path, config.handshake)
    reused = payload is not None
    if payload is None:
        payload, reused = _serve(config, key, client_path, progress, prompt, accept_new_host_key)
    progress.done(payload, reused=reused)
    remember_parse(config)
    return payload, reused


def _serve(config: Config, key: str, client_path: str, progress: Progress, prompt: Prompt | None,
           accept_new_host_key: bool) -> tuple[ClientPayload, bool]:
    """Steps 2-5 (the client file did not do): a tunnel held by the host's broker or a keeper process,
    or the launcher run here."""
    if config.tunnel:  # tunnel machinery (paramiko, sshtunnel) takes pathlib's paths
        from pathlib import Path

        tunnel_client_path = Path(client_path)
        if config.local_port is not None:
            from ..launcher import check_local_port

            check_local_port(config, tunnel_client_path)
        tunneled = None
        if config.connection_persist > 0:  # the destination's broker keeps the forwards; else a keeper process
            from ..broker.tunnels import run_tunnel

            tunneled = run_tunnel(config, key, tunnel_client_path, progress, _asking(prompt, progress),
                                  accept_new_host_key=accept_new_host_key)
        if tunneled is None:
            from ..keeper.start import start_keeper

            tunneled = start_keeper(config, key, tunnel_client_path, progress, _asking(prompt, progress),
                                    accept_new_host_key=accept_new_host_key)
        return tunneled
    from ..connect import open_host  # host machinery (subprocess, SSH) only once the warm path missed
    from ..launcher import Launcher, check_direct_reachable

    check_direct_reachable(config)
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "checking server state")
    asking = _asking(prompt, progress) if config.remote else None  # this machine asks nothing
    with open_host(config, asking, accept_new_host_key=accept_new_host_key) as host:
        return Launcher(config, key, client_path, progress).serve(host)[0], False


def _asking(prompt: Prompt | None, progress: Progress) -> Prompt | None:
    """Where login questions go (`prompt`, the terminal, a Jupyter cell), each after the live line ends."""
    from .. import prompts

    return prompts.before_asking(prompt or prompts.default(), progress.close)


def dry_run(config: Config, key: str | None = None) -> str:
    """The command a launch would run; nothing is connected, written or started.

    For a local service that is exactly the command (`workdir` and the status file absolute). For a
    remote one, `~` stands for the SSH user's home, which only a connection would tell.
    """
    key = key or evaluate_key(config)
    if config.remote:
        return evaluate_command(config, key, f"{statefiles.REMOTE_STATE_DIR}/{key}.json")
    state_dir = os.path.abspath(statefiles.local_server_dir())
    return evaluate_command(config, key, f"{state_dir}/{key}.json", os.path.expanduser(config.workdir))
