"""`status`: where one service stands on its host, and its client side, as data."""

from __future__ import annotations

import os
from pathlib import Path

from .. import statefiles
from ..config import Config, evaluate_key
from ..connect import open_host
from ..hosts import Host
from ..progress import Progress
from ..prompts import Prompt
from ..service import Service
from .entries import RUNNING, ClientSide, ServiceEntry, client_entry, server_entry

VERIFIED, NOT_ITS_PORT, UNVERIFIED = "verified", "not the service's", "unverified"


class StatusResult(ServiceEntry):
    client: ClientSide
    # Without a handshake, who listens on `port` of a running service: VERIFIED (its process group),
    # NOT_ITS_PORT (another process), UNVERIFIED (the host cannot tell: no /proc); None with a handshake.
    port_listener: str | None



def status(config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
           progress: Progress | None = None, prompt: Prompt | None = None,
           accept_new_host_key: bool = False) -> StatusResult:
    """The service's status on its host plus the client side; connects to the host (`accept_new_host_key`:
    as for `run()`, here and below)."""
    progress = progress or Progress.silent()
    key = evaluate_key(config)
    cpath = Path(statefiles.client_file(key, connection_dir, local_service=not config.remote))
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, key)
        raw, seen = service.read_status_seen()
        entry = server_entry(host, key, service.status_file, raw, service.log_file, seen)
        if entry["workdir"] is None:
            entry["workdir"] = host.expand(config.workdir)
        listener = port_listener(host, entry) if config.handshake is None else None
    return {**entry, "client": client_entry(cpath, key, config.tunnel), "port_listener": listener}


def port_listener(host: Host, entry: ServiceEntry) -> str | None:
    """Who listens on a running service's port (see StatusResult); None when it is not running."""
    if entry["status"] != RUNNING or entry["pid"] is None or entry["port"] is None:
        return None
    if entry["job"] is not None:
        return UNVERIFIED  # its processes are on the job's node, not on the login node
    listens = host.listens(entry["pid"], entry["port"])
    return UNVERIFIED if listens is None else VERIFIED if listens else NOT_ITS_PORT
