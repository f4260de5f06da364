"""A handle on a launched service, for notebooks and interactive code: `svc = launch(config)`.

`launch()` does what `run()` does (same config, same prompts and progress:
in a Jupyter cell a live display and the cell's input box) and returns a
`ServiceHandle` instead of the bare payload: the URL, the payload, the key,
and `status()`, `logs()` and `stop()` bound to the config it was launched
with, so later cells need not repeat it. `run()` is unchanged.

A handle does no I/O until a method is called: its `repr` (and the HTML table
a notebook shows) tells what is known from the launch and the last call.
"""

from __future__ import annotations

import copy
import html
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import api
from .config import evaluate_key
from .progress import Progress, open_in_browser, service_url
from .service import STOP_TIMEOUT

if TYPE_CHECKING:
    from .api import ConfigSource
    from .commands.status import StatusResult
    from .commands.up import PathLike
    from .prompts import Prompt
    from .render import StopOutcome

#: statuses in which the service is up (api.status's words); any other is shown as "(was at URL)"
UP = ("running", "starting")


def launch(config: ConfigSource, *, connection_dir: PathLike | None = None, progress: Progress | None = None,
           prompt: Prompt | None = None, accept_new_host_key: bool = False,
           open_browser: bool = False) -> ServiceHandle:
    """Launch the service described by `config`, or reconnect to it, as `run()` does (`accept_new_host_key`
    too); return a handle on it. `open_browser`: then `handle.open()`.

    The handle keeps a copy of the config (a mapping) or its absolute path (a
    YAML file), `connection_dir` and `prompt`, and uses them for `status()`,
    `logs()` and `stop()`. Errors raise `LauncherError` subclasses, as `run()`.
    """
    kept: Mapping[str, Any] | str
    if isinstance(config, Mapping):
        kept = copy.deepcopy(dict(config))  # later changes to the caller's dict do not move the handle
    else:
        kept = os.path.abspath(os.path.expanduser(os.fspath(config)))  # the notebook may chdir later
    loaded, payload = api.launched(kept, connection_dir=connection_dir, progress=progress, prompt=prompt,
                                   accept_new_host_key=accept_new_host_key, call="launch")
    handle = ServiceHandle(kept, payload, key=evaluate_key(loaded), host=loaded.ssh_target if loaded.remote else None,
                           tunnel=loaded.tunnel, connection_dir=connection_dir, prompt=prompt)
    if open_browser:
        handle.open()
    return handle


class ServiceHandle:
    """A launched service: `url`, `payload`, `key`, and `status()`, `logs()`, `stop()` for its config.

    `state` is what the last call said: "running" after the launch, the
    status after `status()`, "stopped" after `stop()`.

    A handle used in a `with` block stops the service when the block ends (an
    error in it too): `with launch(config) as svc: ...`. Otherwise the service
    outlives the handle, as every launch's does.
    """

    def __init__(self, config: Mapping[str, Any] | str, payload: Mapping[str, Any], *, key: str,
                 host: str | None = None, tunnel: bool = False, connection_dir: PathLike | None = None,
                 prompt: Prompt | None = None) -> None:
        self.config = config
        self.payload: dict[str, Any] = dict(payload)
        self.key = key
        self.host = host  # the SSH target; None for a service on this machine
        self.tunnel = tunnel
        self.connection_dir = connection_dir
        self.prompt = prompt
        self.state = "running"

    @property
    def url(self) -> str:
        """The service's URL as this machine reaches it (the tunnel's local end with a tunnel): the one its log
        printed (`url_pattern`, its path and query kept), else `http://host:port/`."""
        return service_url(self.payload)

    def open(self) -> bool:
        """Open `url` in the user's browser (`$BROWSER` honoured; in a notebook also a link in the cell)."""
        return open_in_browser(self.url)

    def status(self) -> StatusResult:
        """`api.status` of the config: absent, starting, running, failed or stale, and the details."""
        result = api.status(self.config, connection_dir=self.connection_dir, prompt=self.prompt)
        self.state = result["status"]
        return result

    def logs(self, tail: int = 50) -> str:
        """The last `tail` lines of the service's log (`NotRunningError` when there is none)."""
        return api.logs(self.config, tail=tail, prompt=self.prompt)

    def stop(self, timeout: float = STOP_TIMEOUT, keep_log: bool = False) -> StopOutcome:
        """`api.stop` of the config: the service, its tunnel keeper and its state; stopping twice succeeds."""
        outcome = api.stop(self.config, connection_dir=self.connection_dir, timeout=timeout, keep_log=keep_log,
                           prompt=self.prompt)
        self.state = "stopped"
        return outcome

    def __enter__(self) -> ServiceHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def where(self) -> str:
        """How this machine reaches the service: "local", "direct, ssh HOST" or "tunnel via HOST"."""
        if self.host is None:
            return "local"
        return f"tunnel via {self.host}" if self.tunnel else f"direct, ssh {self.host}"

    def __repr__(self) -> str:
        at = f"at {self.url}" if self.state in UP else f"(was at {self.url})"
        where = "" if self.host is None else f" ({self.where()})"
        return f"<service {self.key} {self.state} {at}{where}>"

    def _repr_html_(self) -> str:
        """A small table for notebooks; every value is escaped."""
        url = html.escape(self.url)
        rows: list[tuple[str, str]] = [
            ("service", html.escape(self.key)),
            ("status", html.escape(self.state)),
            ("URL", f'<a href="{url}" target="_blank">{url}</a>' if self.state in UP else url),
            ("where", html.escape(self.where())),
        ]
        if "keeper_pid" in self.payload:
            rows.append(("tunnel keeper", f"pid {html.escape(str(self.payload['keeper_pid']))}"))
        for name, value in self.payload.items():  # the service's other ports (as this machine reaches them)
            if name.endswith("_port") and not name.startswith("tunneled-"):
                rows.append((html.escape(name), html.escape(str(value))))
        body = "".join(f'<tr><th style="text-align:left">{name}</th><td style="text-align:left">{value}</td></tr>'
                       for name, value in rows)
        return f'<table class="remote-http-launcher-service">{body}</table>'
