"""`list`: every service with a status file on a host."""

from __future__ import annotations

from ..hosts import Host
from .entries import ServiceEntry, server_entry


def list_services(host: Host) -> list[ServiceEntry]:
    """Every service with a status file in the host's state directory."""
    entries = []
    state_dir = host.state_dir
    for name in host.listdir(state_dir):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        key = name[: -len(".json")]
        raw, seen = host.read_status_file(name)  # with its PID's start time: one round trip a key, not two
        if raw is None:  # removed while listing
            continue
        entries.append(server_entry(host, key, f"{state_dir}/{name}", raw, f"{state_dir}/{key}.log", seen))
    return entries
