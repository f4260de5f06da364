"""`connections` and `disconnect`: the live brokers, as data, and ending them."""

from __future__ import annotations

import time
from typing import Any, TypedDict

from ..errors import BrokerUnavailable
from ..processes import terminate
from ..service import KILL_WAIT, STOP_TIMEOUT
from .client import request
from .registry import destination_id, is_broker, live_brokers

POLL = 0.05


class Connection(TypedDict):
    host: str | None  # the SSH target it logged in to
    pid: int
    since: float | None  # when it logged in (epoch seconds)
    last_use: float | None  # epoch seconds; None when it did not answer
    sessions: int | None  # commands using it right now
    tunnels: list[str] | None  # the keys whose tunnels it keeps
    persist: float | None
    current: bool  # new commands for its host use it; False once ~/.ssh/config changed (then it idles out)
    link: str | None  # "up", "reconnecting" or "waiting for login"; None when it did not answer


def connections() -> list[Connection]:
    """Every live broker of this user, asked how it is used."""
    found: list[Connection] = []
    for files, owner in live_brokers():
        try:
            answer = request(files, "info")
        except BrokerUnavailable:  # what answers at its address is not it
            answer = None
        info: dict[str, Any] = answer if isinstance(answer, dict) else {}
        idle = info.get("idle")
        target = owner.data.get("target")
        since = owner.data.get("since")
        persist = owner.data.get("persist")
        found.append({"host": target if isinstance(target, str) else None, "pid": owner.pid,
                      "since": since if isinstance(since, (int, float)) else None,
                      "last_use": time.time() - idle if isinstance(idle, (int, float)) else None,
                      "sessions": info.get("sessions"), "tunnels": info.get("tunnels"),
                      "persist": persist if isinstance(persist, (int, float)) else None,
                      "current": isinstance(target, str) and files.name == destination_id(target),
                      "link": info["link"] if isinstance(info.get("link"), str) else None})
    return found


def disconnect(host: str | None = None) -> list[Connection]:
    """End the brokers logged in to `host` (all when None); the ones ended. Each removes its files."""
    ended = []
    for entry in connections():
        if host is not None and entry["host"] != host:
            continue
        for force, wait in ((False, STOP_TIMEOUT), (True, KILL_WAIT)):
            owner = next((o for _, o in live_brokers() if o.pid == entry["pid"]), None)
            if owner is None or not is_broker(owner) or not terminate(owner.pid, force=force):
                break
            deadline = time.monotonic() + wait
            while owner.same_process() and time.monotonic() < deadline:
                time.sleep(POLL)
            if not owner.same_process():
                break
        ended.append(entry)
    return ended
