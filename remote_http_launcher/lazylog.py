"""Loggers that cost nothing until something imports `logging`.

Until then no handler can exist: the CLI imports `logging` for `--log-level
debug` and the log files, a program calling `run()` that configured logging
has it, the broker and keeper daemons import it. A DEBUG or INFO record made
before would go nowhere (logging's last resort prints warnings only), so
modules on the warm and reconnect paths log through `Logger` and spare those
paths the import (a tenth of a reconnect, with its dependencies).
"""

from __future__ import annotations

import sys


class Logger:
    """`logging.getLogger(name)`'s `debug` and `info`, made only once `logging` is imported."""

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, message: str, *args: object) -> None:
        self._log("DEBUG", message, args)

    def info(self, message: str, *args: object) -> None:
        self._log("INFO", message, args)

    def _log(self, level: str, message: str, args: tuple[object, ...]) -> None:
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.getLogger(self.name).log(getattr(logging, level), message, *args)
