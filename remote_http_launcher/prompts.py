"""Asking the user where the call was made: a terminal, a Jupyter kernel, or a function.

A prompt function takes the text to show and whether the answer is secret
(a password, a one-time code, a passphrase) and returns the answer; raising
(KeyboardInterrupt, EOFError, anything) cancels. Logins ask through one of
these and nothing else, so a password + one-time-code login works the same on
a terminal, in a notebook cell and from a program that passes `prompt=`; the
tunnel keeper, which has no terminal, sends its questions to the process the
user called (keeper/start.py), which asks them here.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")
    Prompt = Callable[[str, bool], str]
else:  # the name others import, for annotations only (collections.abc would import collections)
    Prompt = "Callable[[str, bool], str]"
QUESTION_POLL = 0.1  # seconds: how often the calling thread looks for the login's questions (and Ctrl-C)

#: How a failure says a prompt could have been answered (no terminal, no kernel input, no `prompt=`).
HOW_TO_ANSWER = "run it on a terminal, or pass prompt= to run() (a function (text, secret) -> answer)"


def default() -> Prompt | None:
    """The terminal when stdin is one, else a Jupyter kernel that allows input; None when neither."""
    if sys.stdin is not None and sys.stdin.isatty():
        return terminal
    return jupyter_kernel()


def terminal(text: str, secret: bool) -> str:
    """Ask on the terminal; a secret is read without echo."""
    if secret:
        import getpass

        return getpass.getpass(text)
    sys.stderr.write(text)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError("no answer: the terminal's input ended")
    return line.rstrip("\n")


def jupyter_kernel() -> Prompt | None:
    """The input box of the notebook cell being run, when its request allows input (ipykernel >= 6).

    Decided when called, at the start of a run on the thread that called:
    the kernel's current request must be a cell's `execute_request` whose
    `allow_stdin` is true, and this must be the thread that runs cells (the
    main thread). ipykernel keeps the last cell's `allow_stdin` after that
    cell ends, so a widget callback (a comm message), an asyncio task or a
    thread outliving its cell would otherwise send an input request that no
    front end shows and wait for it forever (a stray waiter would even take
    the answers meant for a later cell's `input()`). The questions come here
    (`answered_here`, the keeper's relay), so `getpass`/`raw_input` address
    them to that same cell's parent header; secrets go as `password: true`.
    A kernel interrupt while one is asked raises KeyboardInterrupt here.
    """
    from .progress import jupyter_kernel as running_kernel  # no IPython import outside a kernel

    kernel: Any = running_kernel()
    if kernel is None:
        return None
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    get_parent = getattr(kernel, "get_parent", None)
    parent: Any = get_parent("shell") if callable(get_parent) else None
    header = parent.get("header") if isinstance(parent, dict) else None
    content = parent.get("content") if isinstance(parent, dict) else None
    if not isinstance(header, dict) or header.get("msg_type") != "execute_request" or \
            not isinstance(content, dict) or not content.get("allow_stdin", True) or \
            not getattr(kernel, "_allow_stdin", False):
        return None

    def ask(text: str, secret: bool) -> str:
        return str(kernel.getpass(text) if secret else kernel.raw_input(text))

    return ask


def before_asking(prompt: Prompt | None, first: Callable[[], None]) -> Prompt | None:
    """`prompt`, calling `first` (e.g. ending the live progress line) before each question."""
    if prompt is None:
        return None
    ask = prompt

    def wrapped(text: str, secret: bool) -> str:
        first()
        return ask(text, secret)

    return wrapped


def answered_here(work: Callable[[Prompt | None], T], prompt: Prompt | None) -> T:
    """Run `work(relay)` on a helper thread while its questions are asked on this one.

    paramiko calls its keyboard-interactive handler on its own thread, but a
    Jupyter kernel's input box (and a terminal's Ctrl-C) belong to the thread
    that made the call: so the questions come back here. Ctrl-C while one is
    asked cancels the work's question too, then propagates.
    """
    if prompt is None:
        return work(None)
    import queue
    import threading

    questions: queue.Queue[tuple[str, bool, queue.Queue[tuple[bool, Any]]]] = queue.Queue()
    outcome: list[tuple[bool, Any]] = []

    def relay(text: str, secret: bool) -> str:
        reply: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        questions.put((text, secret, reply))
        answered, value = reply.get()
        if not answered:
            raise value
        return str(value)

    def run() -> None:
        try:
            outcome.append((True, work(relay)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="rhl-login", daemon=True)
    worker.start()
    while worker.is_alive() or not questions.empty():
        try:
            text, secret, reply = questions.get(timeout=QUESTION_POLL)
        except queue.Empty:
            continue
        try:
            reply.put((True, prompt(text, secret)))
        except Exception as exc:  # no answer (e.g. end of input): the login step is given up
            reply.put((False, exc))
        except BaseException as exc:  # Ctrl-C, a kernel interrupt: the whole call ends
            reply.put((False, exc))
            raise
    worker.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    result: T = value
    return result
