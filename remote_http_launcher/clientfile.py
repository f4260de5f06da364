"""Step 1, the warm path: reuse the client connection file when the service answers there.

This runs on every call of a script that asks for the service's address, so
it imports only config, state files and the handshake: no host machinery, no
SSH, no HTTP library. A payload whose tunnel keeper is gone is never trusted:
its local port may since have been taken by anyone.
"""

from __future__ import annotations

import os

from . import handshake, statefiles
from .config import Handshake
from .locks import LockOwner
from .statefiles import ClientPayload, PathArg


def keeper_lock_path(client_path: PathArg) -> str:
    """`<key>.keeper.lock` beside the client file: held by the key's tunnel keeper for its whole life."""
    return os.path.splitext(os.fspath(client_path))[0] + ".keeper.lock"


def keeper_log_path(client_path: PathArg) -> str:
    return os.path.splitext(os.fspath(client_path))[0] + ".keeper.log"


def reuse(client_path: PathArg, check: Handshake | None) -> ClientPayload | None:
    """The payload of a client file whose service answers; otherwise the file is removed and None returned."""
    statefiles.check_trusted(client_path, "client file")
    payload = statefiles.read_payload(client_path)
    if payload is not None and still_served(client_path, payload) and handshake.payload_answers(payload, check):
        return payload
    statefiles.remove(client_path)
    return None


def still_served(client_path: PathArg, payload: ClientPayload) -> bool:
    """False when the tunnel keeper a payload names is gone: its local port may now be anyone's."""
    pid = payload.get("keeper_pid")
    if pid is None:
        return True
    owner = LockOwner.parse(statefiles.read_bytes(keeper_lock_path(client_path)))
    return owner is not None and owner.pid == pid and owner.same_process()
