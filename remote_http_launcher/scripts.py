"""POSIX `sh` programs that run on the service's host, locally or over SSH, and what they are given.

The programs are files of this package (sh/*.sh), read when first run (the
warm path runs none). The same text runs in both places, so local mode
exercises exactly the code path that remote hosts get. Values are never
interpolated into program text: they travel as positional arguments (quoted
by the SSH host, passed as argv locally), so no config value can inject a
command. What may be secret (the status record, with `file_parameters`)
travels on stdin instead: arguments are in every user's process list (`ps`,
/proc/PID/cmdline).
"""

from __future__ import annotations

import os

from . import jsontext
from .records import cache

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Literal

    # A program's own file; libraries (prepare, a scheduler's submit) only define functions for the next file.
    Name = Literal["process_info", "group_alive", "port_listener", "process_origin", "key_processes", "signal_group",
                   "kill_group", "service", "prepare", "launch", "start", "submit", "job", "read_file", "read_status",
                   "slurm_submit", "slurm_query", "slurm_cancel", "pbs_submit", "pbs_query", "pbs_cancel",
                   "sge_submit", "sge_query", "sge_cancel", "oar_submit", "oar_query", "oar_cancel", "check"]

PRELUDE = "prelude"  # sh/prelude.sh: the definitions every program starts with
# The start of the stderr line saying which program rhl_use found: "using NAME: PATH".
USING = "using "
# The line service.sh logs when a setup line fails: "...line N failed (status CODE): LINE".
SETUP_FAILED = "remote-http-launcher: setup line "
SH_DIR = os.path.join(os.path.dirname(__file__), "sh")


class Exit:
    """Exit codes of the programs beyond 0 and 1; prelude.sh names each `rhl_exit_<name>` (a test checks).
    Plain ints, not an IntEnum: `enum` costs a first launch as much as its interpreter's own start-up."""

    CANNOT_TELL = 3  # port_listener: no /proc/net/tcp (not Linux), the port is unverified
    READ_ABSENT = 3  # read_file, read_status: no such file
    READ_FAILED = 4  # read_status: the file exists but `head` failed (SFTP reads it instead)
    WORKDIR = 10
    LOG = 11
    NO_CONDA = 12
    NO_CONDA_ENV = 13
    STATE_DIR = 14
    SUBMIT = 15  # the scheduler refused the job (its message on stderr)
    NO_COMMAND = 16  # a scheduler's command is neither on PATH nor on the login shell's (rhl_use)


@cache
def program(*names: Name) -> str:
    """The text `sh -c` runs: the prelude, then the named files in order (the last one is the program)."""
    return "".join(_source(name) for name in (PRELUDE, *names))


@cache
def _source(name: str) -> str:
    """A program file beside this module. Read as a plain file: importlib.resources (which would also
    serve a zipped package) costs a cold launch tempfile, shutil and more, a fifth of its imports, and
    pip installs packages as files."""
    with open(os.path.join(SH_DIR, f"{name}.sh"), encoding="utf-8") as handle:
        return handle.read()


LAUNCH_STATUS_ARG = 2  # where launch_args puts the status file


def launch_args(*, workdir: str, log: str, status_file: str, command: str, conda: str | None,
                lock: str = "", lock_token: str = "", ports: str = "", setup: Sequence[str] = ()) -> list[str]:
    """Positional arguments of launch.sh; its stdin is `record_head(...)`.

    The service removes `lock` once its record is written, if the lock still holds `lock_token`. `ports`
    (ports_spec): the ports the service program chooses and puts in the command. `setup`: lines the service
    runs first (setup_arg).
    """
    first, exec_text = exec_plan(command) or ("", "")
    args = [workdir, log, status_file, command, conda or "", program("service"), lock, lock_token, first, exec_text]
    if not ports and not setup:
        return args
    return [*args, "", "", "", ports, setup_arg(setup)]  # service.sh: no job id, node or run; ports, setup


def setup_arg(setup: Sequence[str]) -> str:
    """service.sh's SETUP argument: the setup lines (each one line: config validates it), one per line."""
    return "\n".join(setup)


def setup_failure(log_tail: Sequence[str], host: str) -> str | None:
    """`setup line N on HOST failed (status CODE): LINE` when a log's last lines (service.log_tail) report a
    failed setup line, else None."""
    reports = [line.strip() for line in log_tail if line.strip().startswith(SETUP_FAILED)]
    if not reports:
        return None
    number, _, rest = reports[-1][len(SETUP_FAILED):].partition(" ")
    return f"setup line {number} on {host} {rest}"


def port_placeholders(names: tuple[str, ...], nonce: str) -> dict[str, str]:
    """What `{port}` (and each other chosen port field) renders to in the command: a word of letters and
    digits that occurs nowhere else (`nonce`: random hex), which service.sh replaces with the port's digits.
    Digits mean the same in every quoting context of sh, so the command's quoting stays as its author wrote
    it, also inside single quotes, where a variable such as "$PORT" would not expand."""
    return {name: f"rhlport{nonce}n{index}" for index, name in enumerate(names)}


def ports_spec(placeholders: Mapping[str, str], port_range: tuple[int, int]) -> str:
    """service.sh's PORTS argument: `START END NAME=PLACEHOLDER...` (words without spaces or quotes)."""
    return " ".join([str(port_range[0]), str(port_range[1]),
                     *(f"{name}={placeholder}" for name, placeholder in placeholders.items())])


def record_head(record: Mapping[str, Any]) -> bytes:
    """launch.sh's stdin: the status record minus pid, start_time and uid, which the service adds. One line
    (JSON escapes newlines in strings), as the programs' `read` takes it."""
    return (jsontext.dumps(dict(record), separators=(", ", ": "))[:-1] + ", \n").encode()


# ---------------------------------------------------------------- simple commands

_SEPARATORS = " \t"
_OPERATORS = frozenset(";&|<>()`")  # unquoted, any of these makes a list, pipeline, subshell or redirection
_GLOB = frozenset("*?[")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_FORBIDDEN_IN_BRACES = frozenset(" \t'\"\\$`{}")
_RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while",
                       "until", "for", "in", "[[", "]]", "function", "select", "time", "exec"})


def exec_plan(command: str) -> tuple[str, str] | None:
    """How the service's shell can become `command` itself: (its name's word, the text to eval), or None.

    Only a simple command qualifies: optional `NAME=value` assignments, then
    words, with no unquoted `;`, `&`, `|`, `<`, `>`, `(`, `)`, no command
    substitution (`$(...)`, backquotes) or arithmetic anywhere, no newline; in
    doubt (anything this scanner does not fully understand), None. The
    name's word must expand without side effects (literal text, quotes,
    `~`, `$NAME`, `${NAME}`; no globs, no special parameters) because the
    service program (service.sh) expands it once more to check that it names a file, not a
    builtin or function. The text to eval is `command` with `exec ` before
    the name (`A=1 exec prog args`: assignments before `exec` are exported
    to the program).
    """
    if "\n" in command or "\r" in command:
        return None
    words = _simple_words(command)
    if not words:
        return None
    for start, end, pure in words:
        word = command[start:end]
        if _is_assignment(word):
            continue
        if not pure or word in _RESERVED:
            return None
        return word, f"{command[:start]}exec {command[start:]}"
    return None  # assignments only


def _simple_words(command: str) -> list[tuple[int, int, bool]] | None:
    """(start, end, expands without side effects) of each word of a simple command; None if it is not one."""
    words: list[tuple[int, int, bool]] = []
    i, n = 0, len(command)
    start: int | None = None
    pure = True
    while i < n:
        c = command[i]
        if start is None:
            if c in _SEPARATORS:
                i += 1
                continue
            if c == "#":  # a comment, to the end of the line
                break
            start, pure = i, True
        if c in _SEPARATORS:
            words.append((start, i, pure))
            start = None
        elif c == "\\":
            if i + 1 >= n:
                return None
            i += 1
        elif c == "'":
            i = command.find("'", i + 1)
            if i < 0:
                return None
        elif c == '"':
            i += 1
            while i < n and command[i] != '"':
                if command[i] == "\\":
                    i += 2
                    continue
                if command[i] == "`":
                    return None
                if command[i] == "$":
                    step = _dollar(command, i)
                    if step is None:
                        return None
                    i, pure = step[0], pure and step[1]
                    continue
                i += 1
            if i >= n:
                return None
        elif c == "$":
            step = _dollar(command, i)
            if step is None:
                return None
            i, pure = step[0], pure and step[1]
            continue
        elif c in _OPERATORS:
            return None
        elif c in _GLOB:
            pure = False
        i += 1
    if start is not None:
        words.append((start, n, pure))
    return words


def _dollar(command: str, i: int) -> tuple[int, bool] | None:
    """At a `$`: (index after its expansion, whether it is free of side effects); None for `$(` or a `${`
    this scanner does not understand."""
    n = len(command)
    nxt = command[i + 1] if i + 1 < n else ""
    if nxt == "(":
        return None
    if nxt == "{":
        end = command.find("}", i + 2)
        inner = command[i + 2:end] if end >= 0 else ""
        if not inner or any(ch in _FORBIDDEN_IN_BRACES for ch in inner):
            return None
        return end + 1, _is_name(inner)
    if nxt in _NAME_START:
        j = i + 1
        while j < n and command[j] in _NAME_CHARS:
            j += 1
        return j, True
    if nxt and nxt in "@*#?-$!0123456789":
        return i + 2, False
    return i + 1, True  # a literal `$`


def _is_name(text: str) -> bool:
    return bool(text) and text[0] in _NAME_START and all(ch in _NAME_CHARS for ch in text)


def _is_assignment(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and _is_name(name)
