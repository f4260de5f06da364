"""Whether a process runs a recorded command line, judged as the shell that launched it would have run it.

The original launcher records the command as text (`"command": "python3 x.py --status-file ~/..."`) and no
start time, so the only way to tell its service from a process that got its PID later is to compare what the
process runs with that text. A shell changes the text before the program sees it: `~` and `$NAME` are
expanded, quotes removed, `NAME=value`, `exec`, `env` and redirections dropped, a compound command (`cd D &&
exec prog`) ends as its last program, and a wrapper (`bash -c TEXT`, the original's conda prefix `source
.../conda.sh && conda activate ENV && TEXT`) keeps the text itself. A script started by name shows its
interpreter first (`/usr/bin/python3 /home/u/bin/hashserver ...`).

So a command line is parsed into its simple commands, each a list of word patterns (regular expressions over
one argument: a literal, with an unknown expansion matching anything), and an argument vector runs it when
it is one of those commands (optionally behind an interpreter) or a shell whose script ends with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

SEP = "\0"  # between arguments when a vector is matched as one string (no argument holds a NUL)
ANY = ".*"  # an expansion this module cannot know (command substitution, an unset variable, a glob)
INTERPRETER_WORDS = 3  # an interpreter and its options before a script run by name (`python3 -s script`)
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"})
RESERVED = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until",
                      "time"})
OPERATORS = ("&&", "||", ";;", ";", "|", "&", "(", ")", "\n")
REDIRECTIONS = ("<<<", "<<-", "<<", ">>", "<&", ">&", "&>>", "&>", "<>", ">|", "<", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class Word(NamedTuple):
    """One shell word: the pattern of the argument it becomes, and its text when it is a plain literal."""

    pattern: str
    literal: str | None
    assignment: bool  # `NAME=value` (before the command name it sets a variable, not an argument)


def variables(command: str) -> list[str]:
    """The names of the variables `command` expands (`$NAME`, `${NAME}`), to look up in the process's
    environment."""
    return sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", command)))


def simple_commands(command: str, home: str, env: Mapping[str, str]) -> list[list[Word]] | None:
    """The simple commands of `command` with their prefixes (`exec`, `env`, assignments...) dropped;
    None when the shell would not parse it (an open quote)."""
    tokens = _tokens(command, home, env)
    if tokens is None:
        return None
    commands: list[list[Word]] = [[]]
    skip_next = False
    for token in tokens:
        if isinstance(token, str):
            if token in REDIRECTIONS:
                skip_next = True  # the redirection's target is no argument
            elif commands[-1]:
                commands.append([])
            continue
        if skip_next:
            skip_next = False
            continue
        commands[-1].append(token)
    return [words for words in map(_program_words, commands) if words]


def runs(argv: Sequence[str], command: str, home: str, env: Mapping[str, str]) -> bool:
    """True when a process with argument vector `argv` runs `command` (see the module's docstring)."""
    wanted = simple_commands(command, home, env)
    if not wanted or not argv:
        return False
    script = _shell_script(argv)
    if script is not None:
        found = simple_commands(script, home, env)
        tail = [[word.pattern for word in words] for words in wanted]
        if found is not None and len(found) >= len(tail) \
                and [[word.pattern for word in words] for words in found[len(found) - len(tail):]] == tail:
            return True
    # The program a shell runs last, or one it was told to exec, is the process itself.
    joined = SEP.join(argv)
    return any(re.fullmatch(_vector_pattern(words), joined, re.DOTALL) is not None
               for words in _exec_candidates(command, wanted))


def _exec_candidates(command: str, wanted: list[list[Word]]) -> list[list[Word]]:
    """The simple commands whose program may be the launched process itself: the last one (a shell execs
    it, or `exec` says so), and any that `exec` explicitly."""
    if len(wanted) == 1 or not re.search(r"(^|[;&|(\s])exec\s", command):
        return wanted[-1:]
    return wanted


def _vector_pattern(words: list[Word]) -> str:
    """A pattern over arguments joined by SEP: the command's words, its program also as a path's last part
    (`python3` for `/usr/bin/python3`), behind at most INTERPRETER_WORDS arguments (a script started by name
    shows its interpreter first)."""
    program = words[0]
    head = rf"(?:[^{SEP}]*/)?" if program.literal is not None and "/" not in program.literal else ""
    return (rf"(?:[^{SEP}]*{SEP}){{0,{INTERPRETER_WORDS}}}" + head
            + SEP.join(word.pattern for word in words))


def _shell_script(argv: Sequence[str]) -> str | None:
    """The script of a shell started as `sh [-options] -c SCRIPT ...` (any option cluster holding `c`)."""
    if argv[0].rsplit("/", 1)[-1].lstrip("-") not in SHELLS:
        return None
    command_mode = False
    for index, arg in enumerate(argv[1:], 1):
        if arg.startswith(("-", "+")) and arg not in ("-", "--"):
            command_mode = command_mode or (arg.startswith("-") and "c" in arg[1:])
            continue
        script = index + 1 if arg == "--" else index
        return argv[script] if command_mode and script < len(argv) else None
    return None


def _program_words(words: list[Word]) -> list[Word]:
    """A simple command's words from its program on: assignments, reserved words and the prefixes that
    exec the rest (`exec`, `env [-i] [-u NAME] [NAME=value]`, `nohup`, `command`) dropped."""
    index = 0
    while index < len(words):
        word = words[index]
        if word.assignment or word.literal in RESERVED or word.literal in ("exec", "nohup", "command"):
            index += 1
        elif word.literal == "env":
            index += 1
            while index < len(words) and (words[index].assignment
                                          or (words[index].literal or "").startswith("-")):
                index += 2 if words[index].literal == "-u" else 1
        else:
            break
    return words[index:]


def _tokens(text: str, home: str, env: Mapping[str, str]) -> list[Word | str] | None:
    """Words (as patterns) and operators (as text) of a shell command line, as POSIX sh splits it."""
    tokens: list[Word | str] = []
    parts: list[str] = []  # the current word's pattern pieces
    literal: list[str] | None = []  # its text while it has no expansion
    started = quoted = False  # a word has begun; it holds quotes (so `''` is an empty argument)
    i, n = 0, len(text)

    def finish() -> None:
        nonlocal parts, literal, started, quoted
        if started:
            pattern = "".join(parts)
            plain = "".join(literal) if literal is not None else None
            is_assignment = _ASSIGNMENT.match(plain or _raw_prefix(pattern)) is not None
            if pattern or quoted:  # an unquoted expansion to nothing is no argument
                tokens.append(Word(pattern, plain, is_assignment))
        parts, literal, started, quoted = [], [], False, False

    def add(text_piece: str) -> None:
        parts.append(re.escape(text_piece))
        if literal is not None:
            literal.append(text_piece)

    def expansion(pattern: str) -> None:
        nonlocal literal
        parts.append(pattern)
        literal = None

    while i < n:
        c = text[i]
        if not started and c in " \t":
            i += 1
            continue
        if c in " \t":
            finish()
            i += 1
            continue
        operator = _operator_at(text, i)
        if operator is not None:
            io_number = started and literal is not None and "".join(literal).isdigit() and operator in REDIRECTIONS
            if io_number:
                parts, literal, started = [], [], False  # `2>&1`: the 2 names a descriptor, not an argument
            finish()
            tokens.append(operator)
            i += len(operator)
            continue
        if not started and c == "#":
            break  # a comment
        first = not started
        started = True
        if c == "\\":
            if i + 1 < n:
                add(text[i + 1])
            i += 2
        elif c == "'":
            quoted = True
            end = text.find("'", i + 1)
            if end < 0:
                return None
            add(text[i + 1:end])
            i = end + 1
        elif c == '"':
            quoted = True
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
                    add(text[i + 1])
                    i += 2
                elif text[i] in "$`":
                    i, piece = _expansion(text, i, env, quoted=True)
                    if piece is None:
                        return None
                    expansion(piece)
                else:
                    add(text[i])
                    i += 1
            if i >= n:
                return None
            i += 1
        elif c in "$`":
            i, piece = _expansion(text, i, env, quoted=False)
            if piece is None:
                return None
            expansion(piece)
        elif c == "~" and (first or _after_assignment(literal)):
            end = i + 1
            while end < n and text[end] not in "/ \t:;&|<>()":
                end += 1
            if end > i + 1:
                expansion(ANY)  # `~user`: another user's home
            elif first:
                add(home)  # `~` alone or `~/...`: the home of the user the shell runs as
            else:
                expansion(f"(?:~|{re.escape(home)})")  # after `NAME=`: bash expands it, a POSIX sh may not
            i = end
        elif c in "*?[":
            expansion(ANY)  # a glob matches what exists when the shell ran, or stays as it is
            i += 1
        else:
            add(c)
            i += 1
    finish()
    return tokens


def _after_assignment(literal: list[str] | None) -> bool:
    """A `~` right after `NAME=` (or `:` in its value) is expanded as at a word's start."""
    text = "".join(literal) if literal is not None else ""
    return bool(_ASSIGNMENT.fullmatch(text)) or (bool(_ASSIGNMENT.match(text)) and text.endswith(":"))


def _raw_prefix(pattern: str) -> str:
    """The literal start of a pattern (the escapes undone), for telling `NAME=$x` an assignment."""
    match = re.match(r"(?:\\.|[A-Za-z0-9_=])*", pattern)
    return re.sub(r"\\(.)", r"\1", match.group(0)) if match else ""


def _operator_at(text: str, i: int) -> str | None:
    for operator in (*REDIRECTIONS, *OPERATORS):
        if text.startswith(operator, i):
            return operator
    return None


def _expansion(text: str, i: int, env: Mapping[str, str], *, quoted: bool) -> tuple[int, str | None]:
    """At a `$` or backquote: (index after it, its pattern); the pattern is None when it does not end."""
    n = len(text)
    if text[i] == "`":
        end = text.find("`", i + 1)
        return (end + 1, ANY) if end >= 0 else (n, None)
    nxt = text[i + 1] if i + 1 < n else ""
    if nxt == "(":
        end = _closing(text, i + 1)
        return (end + 1, ANY) if end >= 0 else (n, None)
    if nxt == "{":
        end = text.find("}", i + 2)
        if end < 0:
            return n, None
        inner = text[i + 2:end]
        return end + 1, _value(inner, env, quoted) if _NAME.fullmatch(inner) else ANY
    match = _NAME.match(text, i + 1)
    if match:
        return match.end(), _value(match.group(0), env, quoted)
    if nxt and nxt in "@*#?-$!0123456789":
        return i + 2, ANY
    return i + 1, re.escape("$")  # a lone `$` is itself


def _value(name: str, env: Mapping[str, str], quoted: bool) -> str:
    """A variable's value as a pattern: unset is unknown; unquoted, blanks split it into arguments."""
    value = env.get(name)
    if value is None:
        return ANY
    if quoted:
        return re.escape(value)
    return SEP.join(re.escape(field) for field in value.split())


def _closing(text: str, i: int) -> int:
    """The index of the `)` closing the `(` at i (nesting counted; quotes inside are not parsed)."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1
