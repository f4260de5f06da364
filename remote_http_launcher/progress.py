"""Progress output on stderr: a live line on a terminal, timestamped lines elsewhere.

Phases are also logged (logger `remote_http_launcher`), so `--log-file` and
`--debug-log-file` get them whatever the console shows.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import TextIO

LEVELS = ("minimal", "basic", "debug")
REDRAW_INTERVAL = 0.1
LOGGER = "remote_http_launcher"


def _log(text: str) -> None:
    """Log a phase; until something imports `logging` nobody can be listening (and the warm path skips it)."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(LOGGER).info("%s", text)


def service_url(payload: Mapping[str, object]) -> str:
    host = str(payload.get("hostname", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{payload.get('port')}/"


class Progress:
    """Reports the launcher's phases; `live` redraws one line in place (a TTY at level minimal)."""

    def __init__(self, level: str = "minimal", stream: TextIO | None = None, live: bool | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.level = level
        self.quiet = quiet
        self.live = (level == "minimal" and self.stream.isatty()) if live is None else live
        self.start = time.monotonic()
        self.current = ""
        self._drawn = 0.0
        self._width = 0
        self._lock = threading.Lock()

    @classmethod
    def silent(cls) -> Progress:
        return cls(quiet=True, live=False)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def phase(self, text: str) -> None:
        self.current = text
        _log(text)
        if self.quiet:
            return
        if self.live:
            self._draw(force=True)
        else:
            self._line(f"{time.strftime('%H:%M:%S')} {self.elapsed():6.2f}s {text}")

    def tick(self) -> None:
        """Called from polling loops so the live line's clock keeps moving."""
        if self.live and not self.quiet:
            self._draw(force=False)

    def done(self, payload: Mapping[str, object], *, reused: bool) -> None:
        how = "reconnected" if reused else "ready"
        summary = f"{how}: {service_url(payload)} ({self.elapsed():.2f} s)"
        _log(summary)
        if not self.quiet:
            self._clear()
            self._line(summary if self.live else f"{time.strftime('%H:%M:%S')} {self.elapsed():6.2f}s {summary}")

    def close(self) -> None:
        """Erase the live line (before an error message is printed)."""
        self._clear()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < REDRAW_INTERVAL:
            return
        with self._lock:
            self._drawn = now
            text = f"{self.current} ({self.elapsed():.1f} s)"
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)

    def _clear(self) -> None:
        if self.live and self._width:
            with self._lock:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
