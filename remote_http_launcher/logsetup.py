"""The launcher's own log: console detail, a log file of phase lines, a debug log file.

Set by the command-line flags `--log-level`, `--log-file`, `--debug-log-file`
or by the config fields of the same names (a flag wins), for the CLI and for
`run()` alike. `logging` is imported only when a log is wanted, so the warm
path stays without it.
"""

from __future__ import annotations

import sys

from .config import LogOptions
from .errors import ConfigError

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

DEFAULT_LEVEL = "minimal"
LOGGER = "remote_http_launcher"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def merge(flags: LogOptions, config: LogOptions | None) -> LogOptions:
    """What applies: each flag given on the command line, else the config's value, else the default."""
    config = config or LogOptions()
    return LogOptions(flags.level or config.level or DEFAULT_LEVEL, flags.file or config.file,
                      flags.debug_file or config.debug_file)


def configure(options: LogOptions) -> Callable[[], None]:
    """Attach the handlers `options` ask for; returns what detaches (and closes) them again."""
    if not (options.file or options.debug_file or options.level == "debug"):
        return lambda: None
    import logging

    targets: list[tuple[logging.Handler, int]] = []
    try:
        for field, path, level in (("log_file", options.file, logging.INFO),
                                   ("debug_log_file", options.debug_file, logging.DEBUG)):
            if path:
                try:
                    targets.append((_file_handler(path), level))
                except OSError as exc:
                    raise ConfigError(f"{field}: cannot write {path!r} ({exc.strerror or exc}); choose another "
                                      "file") from None
    except ConfigError:
        for handler, _ in targets:
            handler.close()
        raise
    if options.level == "debug":
        targets.append((logging.StreamHandler(sys.stderr), logging.DEBUG))
    ours, paramiko = logging.getLogger(LOGGER), logging.getLogger("paramiko")
    saved = (ours.level, ours.propagate, paramiko.level)
    ours.setLevel(logging.DEBUG)
    ours.propagate = False
    formatter = logging.Formatter(FORMAT)
    for handler, level in targets:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        ours.addHandler(handler)
        if level == logging.DEBUG:
            paramiko.addHandler(handler)
            paramiko.setLevel(logging.DEBUG)

    def detach() -> None:
        for handler, _ in targets:
            ours.removeHandler(handler)
            paramiko.removeHandler(handler)
            handler.close()
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        paramiko.setLevel(saved[2])

    return detach


def _file_handler(path: str) -> logging.FileHandler:
    """A log file handler for `path` as the original opens it: `~` expanded, missing parent directories
    created (0700, as our state directories: Seamless asks for ~/.remote-http-launcher/logs/<cluster>/...),
    the file truncated. A file we create is 0600 (it may name hosts and users), and a symlink in its place is
    refused (O_NOFOLLOW), as for every file we write."""
    import logging
    import os
    from pathlib import Path

    from .statefiles import FILE_MODE, make_dirs

    target = Path(path).expanduser()
    make_dirs(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    handler = logging.FileHandler(target, mode="w", encoding="utf-8", delay=True)
    handler.stream = os.fdopen(fd, "w", encoding="utf-8")
    return handler
