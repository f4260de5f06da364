"""The Python API: the same operations as the command line, returning plain data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import load_config
from .launcher import Launcher
from .progress import Progress

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]


def run(config: ConfigSource, *, connection_dir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Launch the service described by `config`, or reconnect to it; return the client payload.

    `config` is a mapping or the path of a YAML file. The payload is what the
    client connection file holds (`hostname`, `port`, ...). Errors raise
    `LauncherError` subclasses carrying one-line messages.
    """
    return Launcher(load_config(config), connection_dir=connection_dir, progress=progress).up()
