"""`Background`: a call running on a thread of its own, whose result is collected later or given up.

For work that can overlap other work: step 4's way in and the host's check
beside the process check (launcher.py), a launch's exec channel opened while
the lock is taken (hosts/ssh.py), a keeper's TCP connection made while it
imports (ssh/dialahead.py). `_thread`, not `threading`: a first local launch
imports no threading, and a keeper dials before its imports.
"""

from __future__ import annotations

import _thread

from .records import Generic

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


class Background(Generic["T"]):
    """A call running on a thread of its own (left behind at exit); `result()` waits for it and returns or
    raises what it did. One given up (`abandon`) has its result closed (`close`), at once or as soon as the
    call returns, so a connection opened for nothing is not left open."""

    def __init__(self, call: Callable[[], T], close: Callable[[T], object] | None = None) -> None:
        self._returned: list[T] = []
        self._raised: list[BaseException] = []
        self._close = close
        self._abandoned = False
        self._guard = _thread.allocate_lock()  # between the call's return and `abandon`
        self._done = _thread.allocate_lock()
        self._done.acquire()
        _thread.start_new_thread(self._run, (call,))

    def _run(self, call: Callable[[], T]) -> None:
        try:
            value = call()
        except BaseException as exc:  # handed to whoever asks for the result
            self._raised.append(exc)
        else:
            with self._guard:
                kept = not self._abandoned
                if kept:
                    self._returned.append(value)
            if not kept and self._close is not None:
                self._close(value)
        finally:
            self._done.release()

    def wait(self) -> None:
        with self._done:
            pass

    def result(self, timeout: float | None = None) -> T:
        """What the call returned (or raised), waited for up to `timeout` seconds (None: however long it
        takes); TimeoutError when it has not ended by then."""
        if not self._done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"timed out after {timeout:g} s")
        self._done.release()
        if self._raised:
            raise self._raised[0]
        return self._returned[0]

    def abandon(self) -> None:
        """Its result is not wanted: closed now, or as soon as the call returns."""
        with self._guard:
            self._abandoned = True
            returned, self._returned = self._returned, []
        if self._close is not None:
            for value in returned:
                self._close(value)


__all__ = ["Background"]
