"""Progress output: a live line on a terminal, a live display in a Jupyter cell, timestamped lines elsewhere.

Phases are also logged (logger `remote_http_launcher`), so `--log-file` and
`--debug-log-file` get them whatever the console shows.

In a Jupyter kernel the live line is one display in the cell's output,
updated in place (`update_display_data`, which JupyterLab, the classic
notebook, VS Code and nbclient all apply): nothing piles up in the saved
notebook, and the summary line replaces it at the end. A kernel is detected
from what is already imported; this module never imports IPython itself
unless a kernel is running (the warm path stays lean).
"""

from __future__ import annotations

import _thread
import sys
import time

from .lazylog import Logger

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

LEVELS = ("minimal", "basic", "debug")
REDRAW_INTERVAL = 0.1
CELL_REDRAW_INTERVAL = 0.25  # a cell's display is a message to the front end: a few updates a second suffice
STILL_WAITING_INTERVAL = 10.0  # seconds between "still waiting" lines of a long phase, where there is no live line
LOGGER = "remote_http_launcher"
log = Logger(LOGGER)  # phases, for the log files


def service_url(payload: Mapping[str, object]) -> str:
    """The service's URL as this machine reaches it: the one its log printed (`url_pattern`, rewritten), else
    `http://host:port/`."""
    url = payload.get("url")
    if isinstance(url, str) and url:
        return url
    host = str(payload.get("hostname", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{payload.get('port')}/"


def jupyter_kernel() -> Any | None:
    """The running Jupyter kernel (ipykernel's Kernel object), or None; never imports IPython.

    Only a process where ipykernel is already imported and IPython's shell
    has a kernel can be one: a script, a terminal IPython or a plain import
    of IPython is not.
    """
    if "ipykernel" not in sys.modules:
        return None
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None)


def open_in_browser(url: str) -> bool:
    """Hand `url` to the user's browser (Python's `webbrowser`: `$BROWSER` is honoured); in a Jupyter cell also
    show it as a link, since the kernel may run where no browser is. False when no browser took it."""
    import webbrowser

    if jupyter_kernel() is not None:
        from html import escape
        from importlib import import_module

        link = escape(url)
        import_module("IPython.display").display(
            {"text/plain": url, "text/html": f'<a href="{link}" target="_blank">{link}</a>'}, raw=True)
    return webbrowser.open(url)


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
        self._phase_start = self.start
        self._waited_note = STILL_WAITING_INTERVAL  # the next "still waiting" line, in seconds into the phase
        self._drawn = 0.0
        self._width = 0
        self._lock = _thread.allocate_lock()  # threading.Lock without importing threading

    @classmethod
    def silent(cls) -> Progress:
        return cls(quiet=True, live=False)

    @staticmethod
    def for_run(level: str | None, stream: TextIO) -> Progress | None:
        """`run()`'s progress when none is given; None shows nothing.

        The config's `log_level` as on the command line (`basic`: phase lines
        on `stream`; `minimal`: a live line when `stream` is a terminal;
        `debug`: nothing here, the debug log says it all), except that in a
        Jupyter cell `minimal`, and no level at all, is a live display in the
        cell. A plain script without a level shows nothing.
        """
        if level in (None, "minimal") and jupyter_kernel() is not None:
            return CellProgress()
        if level is None:
            return None
        return Progress(level, stream, quiet=level == "debug" or (level == "minimal" and not stream.isatty()))

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def phase(self, text: str) -> None:
        self.current = text
        self._phase_start, self._waited_note = time.monotonic(), STILL_WAITING_INTERVAL
        log.info("%s", text)
        if self.quiet:
            return
        if self.live:
            self._draw(force=True)
        else:
            self._line(f"{time.strftime('%H:%M:%S')} {self.elapsed():6.2f}s {text}")

    def warn(self, text: str) -> None:
        """A `warning:` line, shown at every level: something the user should fix."""
        log.info("warning: %s", text)
        self._clear()
        self._line(f"warning: {text}")

    def tick(self) -> None:
        """Called from polling loops so the live line's clock keeps moving; without one, a long phase gets a
        "still waiting" line every STILL_WAITING_INTERVAL seconds (a silent minute looks like a hang)."""
        if self.quiet:
            return
        if self.live:
            self._draw(force=False)
            return
        waited = time.monotonic() - self._phase_start
        if waited >= self._waited_note:
            self._waited_note += STILL_WAITING_INTERVAL
            self._line(f"{time.strftime('%H:%M:%S')} {self.elapsed():6.2f}s still waiting ({waited:.0f} s): "
                       f"{self.current}")

    def done(self, payload: Mapping[str, object], *, reused: bool) -> None:
        how = "reconnected" if reused else "ready"
        summary = f"{how}: {service_url(payload)} ({self.elapsed():.2f} s)"
        log.info("%s", summary)
        if not self.quiet:
            self._end(summary if self.live else f"{time.strftime('%H:%M:%S')} {self.elapsed():6.2f}s {summary}")

    def failed(self, what: str = "failed") -> None:
        """The call failed (or was interrupted): a live line must not be left saying it still works. Erased
        on a terminal (the error follows); in a Jupyter cell the display becomes `failed (N s)`."""
        log.info("%s (%.2f s)", what, self.elapsed())
        self._clear()

    def close(self) -> None:
        """End the live line before something else is shown (an error message, a login question): erased on a
        terminal; in a Jupyter cell it stays as it is and the next phase starts a new display below."""
        self._clear()

    redraw_interval = REDRAW_INTERVAL

    def _draw(self, *, force: bool) -> None:
        """Show the current phase and the clock, at most every `redraw_interval` unless forced."""
        now = time.monotonic()
        if not force and now - self._drawn < self.redraw_interval:
            return
        with self._lock:
            self._drawn = now
            self._show(f"{self.current} ({self.elapsed():.1f} s)")

    def _show(self, text: str) -> None:
        """The live line, overwritten in place on the terminal."""
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

    def _end(self, summary: str) -> None:
        """The summary line, in place of the live line."""
        self._clear()
        self._line(summary)


class CellProgress(Progress):
    """The live line as a display in the output of the Jupyter cell running the call, updated in place.

    `close()` (before a login question, whose input box comes below) leaves
    the display as it is; the next phase starts a new one under the answer,
    so the cell reads top to bottom. The summary replaces the last display.
    Works only in a Jupyter kernel (`jupyter_kernel()`): it uses IPython.display.
    """

    redraw_interval = CELL_REDRAW_INTERVAL

    def __init__(self, level: str = "minimal", quiet: bool = False) -> None:
        super().__init__(level, live=True, quiet=quiet)
        self._handle: Any = None

    def _clear(self) -> None:
        with self._lock:
            self._handle = None

    def _end(self, summary: str) -> None:
        with self._lock:
            self._show(summary)
            self._handle = None

    def failed(self, what: str = "failed") -> None:
        log.info("%s (%.2f s)", what, self.elapsed())
        with self._lock:
            if self._handle is not None and not self.quiet:  # a display is there: it says so, under it the error
                self._show(f"{what} ({self.elapsed():.2f} s)")
            self._handle = None

    def _show(self, text: str) -> None:
        from importlib import import_module

        bundle = {"text/plain": text}
        if self._handle is None:  # IPython is loaded in a kernel; by name, so type checkers need not know it
            self._handle = import_module("IPython.display").display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
