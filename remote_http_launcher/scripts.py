"""POSIX `sh` scripts that run on the service's host, locally or over SSH.

The same text runs in both places, so local mode exercises exactly the code
path that remote hosts get. Values are never interpolated into script text:
they travel as positional arguments (quoted by the SSH host, passed as argv
locally), so no config value can inject a command. What may be secret (the
status record, with `file_parameters`) travels on stdin instead: arguments are
in every user's process list (`ps`, /proc/PID/cmdline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Exit codes of LAUNCH; the launcher turns them into one-line errors.
EXIT_WORKDIR = 10
EXIT_LOG = 11
EXIT_NO_CONDA = 12
EXIT_NO_CONDA_ENV = 13
EXIT_STATE_DIR = 14
EXIT_SUBMIT = 15  # schedulers' SUBMIT: the scheduler refused the job (its message on stderr)

# Prints "<state> <start time>" of a process, or exits 1 when it is gone.
# A zombie counts as gone; the start time identifies the process across PID reuse.
PROCESS_INFO = r"""
set -f
pid=$1
kill -0 "$pid" 2>/dev/null || exit 1
if [ -r "/proc/$pid/stat" ]; then
  read -r line < "/proc/$pid/stat" || exit 1
  line=${line##*) }
  set -- $line
  [ "$1" = Z ] && exit 1
  echo "proc:${20}"
else
  st=$(ps -o lstart= -p "$pid") || exit 1
  echo "ps:$(echo $st)"
fi
"""

# Exits 0 while process group $1 has a member that is not a zombie although its leader
# (PID $1) is gone or a zombie: a service that outlived its `sh -c` wrapper. A live PID $1
# (of any user) means no such group: a group ID is not reused while the group has members.
GROUP_ALIVE = r"""
pg=$1
if [ -d /proc/self ]; then
  if read -r line < "/proc/$pg/stat" 2>/dev/null; then
    rest=${line##*) }
    [ "${rest%% *}" = Z ] || exit 1
  fi
  for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    rest=${line##*) }
    set -f; set -- $rest; set +f
    [ "$3" = "$pg" ] && [ "$1" != Z ] && exit 0
  done
  exit 1
fi
ps -p "$pg" >/dev/null 2>&1 && exit 1
kill -0 -- "-$pg" 2>/dev/null
"""

# Without a handshake, anything accepting connections on the reported port would pass for the service
# (e.g. sshd on 22). Exits 0 when a process of the process group of $1 holds a listening TCP socket on port
# $2 (Linux: /proc/net/tcp{,6} give the socket's inode, the processes' fd links name it), 1 when none does,
# EXIT_CANNOT_TELL without /proc/net/tcp (not Linux): then the port is unverified.
PORT_LISTENER = r"""
pid=$1 port=$(printf %04X "$2")
[ -r /proc/net/tcp ] || [ -r /proc/net/tcp6 ] || exit 3
pg=$pid  # the leader's group; its own when it is gone (its members keep the group's number)
if read -r line 2>/dev/null < "/proc/$pid/stat"; then set -- ${line##*) }; pg=$3; fi
inodes=
for table in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$table" ] || continue
  while read -r _ local _ st _ _ _ _ _ inode _; do
    [ "$st" = 0A ] && [ "${local##*:}" = "$port" ] && inodes="$inodes $inode"
  done < "$table"
done
[ -n "$inodes" ] || exit 1
holds() {  # process directory $1 has one of those sockets open
  links=$(ls -l "$1/fd" 2>/dev/null) || return 1
  for inode in $inodes; do
    case $links in *"socket:[$inode]"*) return 0 ;; esac
  done
  return 1
}
holds "/proc/$pid" && exit 0  # the usual case, and no scan of every process (`read` takes a byte per call)
for f in /proc/[0-9]*/stat; do
  read -r line 2>/dev/null < "$f" || continue
  set -- ${line##*) }
  [ "$3" = "$pg" ] && [ "${f%/stat}" != "/proc/$pid" ] && holds "${f%/stat}" && exit 0
done
exit 1
"""
EXIT_CANNOT_TELL = 3

# For a status file without our start time (the original's): prints the start of process $1 in seconds since
# the epoch (a blank line when unknown); then "argv" and its arguments one a line (Linux), or "text" and its
# command line as `ps` shows it; before those, the value of each variable named in $2... in its environment
# ("+value", or "-" when unset or unreadable), for expanding the recorded command as its shell did.
# Exits 1 when it is gone or not ours to signal.
PROCESS_ORIGIN = r"""
pid=$1
shift
names=$*  # identifiers (checked by the caller): safe to split again
kill -0 "$pid" 2>/dev/null || exit 1
if [ -r "/proc/$pid/stat" ] && [ -r /proc/stat ]; then
  read -r line < "/proc/$pid/stat" || exit 1
  line=${line##*) }
  set -f; set -- $line; set +f
  ticks=${20} started=
  hz=$(getconf CLK_TCK 2>/dev/null) || hz=100
  while read -r name value _; do
    [ "$name" = btime ] && started=$((value + ticks / ${hz:-100})) && break
  done < /proc/stat
  echo "$started"
  echo argv
  for name in $names; do
    value=$(tr '\000' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -m 1 "^$name=") && echo "+${value#*=}" || echo -
  done
  tr '\000' '\n' < "/proc/$pid/cmdline"
else
  elapsed=$(ps -o etimes= -p "$pid" 2>/dev/null) && started=$(($(date +%s) - elapsed)) || started=
  echo "$started"
  echo text
  for name in $names; do echo -; done
  ps -ww -o args= -p "$pid"
fi
"""

# Prints "<pid> <process group>" of each live process of this user that a launch of the status file $1 started
# (or one of their children): ours carry REMOTE_HTTP_LAUNCHER_STATUS_FILE=$1 in their environment
# (SERVICE_PRELUDE), whatever the status file now says, and other users' environments are unreadable; the
# original's carry $1 among their arguments (`--status-file $1`, `--status-file=$1`: its commands are told
# where the file is), which is checked for this user's processes only.
KEY_PROCESSES = r"""
want="REMOTE_HTTP_LAUNCHER_STATUS_FILE=$1"
if printf 'x\000' | grep -qzxF x 2>/dev/null; then  # one grep for all (GNU, BusyBox); else one per process
  found=$(grep -lzxF -- "$want" /proc/[0-9]*/environ 2>/dev/null)
  named=$(grep -lzF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null)
else
  found=$(for f in /proc/[0-9]*/environ; do
    tr '\000' '\n' < "$f" 2>/dev/null | grep -qxF -- "$want" && echo "$f"
  done)
  named=$(for f in /proc/[0-9]*/cmdline; do
    tr '\000' '\n' < "$f" 2>/dev/null | grep -qF -- "$1" && echo "$f"
  done)
fi
me=$(id -u)
for f in $named; do  # the status file as a whole argument, or after `=`, of a process of this user
  d=${f%/cmdline}
  [ "${d#/proc/}" = "$$" ] && continue
  uid=
  while read -r field value _; do [ "$field" = Uid: ] && uid=$value && break; done < "$d/status" 2>/dev/null
  [ "$uid" = "$me" ] || continue
  args=$(tr '\000' '\n' < "$f" 2>/dev/null) || continue
  while IFS= read -r arg; do
    case $arg in "$1"|*="$1") found="$found $d/environ"; break ;; esac
  done <<RHL_ARGS
$args
RHL_ARGS
done
for f in $(printf '%s\n' $found | sort -u); do
  d=${f%/environ}
  [ "${d#/proc/}" = "$$" ] && continue
  read -r line < "$d/stat" 2>/dev/null || continue
  rest=${line##*) }
  set -f; set -- $rest; set +f
  [ "$1" = Z ] || echo "${d#/proc/} $3"
done
"""

# Sends signal $1 to the process group led by $2 (or to $2 alone when it leads no group).
SIGNAL_GROUP = 'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"'

# Kills what is left of process group $1 after its leader is gone.
KILL_GROUP = 'kill -s KILL -- "-$1" 2>/dev/null'

# The service's own first steps (it runs detached, as the new session leader):
# record its PID and start time in the status file, release the launch lock
# (other runs now find this process in the status file), then become the command.
# A simple command whose name is a file (a path, or found on PATH: not a builtin
# or function) is exec'ed by this shell itself (see exec_plan), so the recorded
# PID is the service's own: helpers that signal only that PID (the original's
# rhl-stop) stop the service, not a shell above it. Anything else runs under
# `sh -c`, whose PID is recorded (its process group holds the service).
# The record's head comes on stdin (one line; LAUNCH's here-document), never as an argument.
# Variables are prefixed: the command is eval'ed in this shell.
SERVICE_PRELUDE = r"""
set -f
rhl_status=$1 rhl_cmd=$2 rhl_conda_sh=$3 rhl_conda_env=$4 rhl_umask=$5 rhl_lock=$6 rhl_lock_token=$7
rhl_first=$8 rhl_exec=$9
IFS= read -r rhl_head
exec </dev/null
if [ -r "/proc/$$/stat" ]; then
  read -r rhl_line < "/proc/$$/stat"; rhl_line=${rhl_line##*) }; set -- $rhl_line; rhl_st="proc:${20}"
else
  rhl_st="ps:$(echo $(ps -o lstart= -p $$))"
fi
rhl_uid=
if [ -r "/proc/$$/status" ]; then
  while read -r rhl_field rhl_value _; do [ "$rhl_field" = Uid: ] && rhl_uid=$rhl_value && break; done < "/proc/$$/status"
fi
printf '%s"pid": %s, "start_time": "%s", "uid": %s}\n' "$rhl_head" "$$" "$rhl_st" "${rhl_uid:-$(id -u)}" \
  > "$rhl_status.$$.tmp" && mv -f "$rhl_status.$$.tmp" "$rhl_status" \
  || { echo "remote-http-launcher: cannot write $rhl_status"; exit 1; }
if [ -n "$rhl_lock" ] && [ -n "$rhl_lock_token" ]; then
  rhl_held=
  IFS= read -r rhl_held 2>/dev/null < "$rhl_lock"
  case $rhl_held in *"$rhl_lock_token"*) rm -f -- "$rhl_lock" ;; esac  # only the lock of the launch that started us
fi
set +f
umask "$rhl_umask"
export REMOTE_HTTP_LAUNCHER_STATUS_FILE="$rhl_status"  # how `stop` finds the key's processes (KEY_PROCESSES)
if [ -n "$rhl_conda_env" ]; then
  . "$rhl_conda_sh" && conda activate "$rhl_conda_env" \
    || { echo "remote-http-launcher: conda activate $rhl_conda_env failed"; exit 1; }
fi
if [ -n "$rhl_first" ]; then
  eval "set -- $rhl_first"  # the command name as the command will expand it (exec_plan: no side effects)
  case ${1-} in
    */*) rhl_found=/ ;;
    *) rhl_found=$(command -v -- "${1-}" 2>/dev/null) ;;
  esac
  case $rhl_found in /*) set --; eval "$rhl_exec" ;; esac  # "NAME=value ... exec COMMAND ARGS"
fi
exec sh -c "$rhl_cmd"
"""

# The first steps of a launch (LAUNCH, and a batch job's submission: schedulers/base.py), with `set -u` and
# $wd, $log, $status and $conda_env set: the state directory, the workdir (entered), an empty log, and for
# conda its conda.sh in $conda_sh; $user_umask is the caller's umask, the script's own is then 077.
PREPARE = r"""
user_umask=$(umask)
umask 077
# Builtins and parameter expansions where they do: every external command is a fork and an exec.
state_dir=${status%/*}
{ [ -d "$state_dir" ] || mkdir -p -- "$state_dir"; } && chmod 700 -- "$state_dir" || { echo "cannot create state directory $state_dir" >&2; exit 14; }
{ [ -d "$wd" ] || mkdir -p -- "$wd" 2>/dev/null; } && cd -- "$wd" || { echo "cannot create or enter workdir $wd" >&2; exit 10; }
# `true`, not `:`: a redirection error on a special built-in makes sh exit before `||` runs
true 2>/dev/null > "$log" || { echo "cannot write log file $log" >&2; exit 11; }
conda_sh=
if [ -n "$conda_env" ]; then
  for base in "${CONDA_EXE:+${CONDA_EXE%/bin/conda}}" \
      "$(command -v conda 2>/dev/null | sed 's#/\(bin\|condabin\)/conda$##')" \
      "$("${SHELL:-sh}" -lc 'command -v conda' 2>/dev/null </dev/null | tail -n 1 | sed 's#/\(bin\|condabin\)/conda$##')" \
      "$(sed -n "s#.*__conda_setup=\"\$('\(.*\)/bin/conda'.*#\1#p" "$HOME/.bashrc" 2>/dev/null | head -n 1)" \
      "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/miniconda3" "$HOME/anaconda3" \
      /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3; do
    if [ -n "$base" ] && [ -r "$base/etc/profile.d/conda.sh" ]; then conda_sh=$base/etc/profile.d/conda.sh; break; fi
  done
  [ -n "$conda_sh" ] || { echo "conda not found (looked in PATH, login shell, ~/.bashrc, ~/miniforge3, ~/miniconda3, ~/anaconda3, /opt/conda)" >&2; exit 12; }
  base=${conda_sh%/etc/profile.d/conda.sh}
  case $conda_env in
    /*) env_dir=$conda_env ;;
    base) env_dir=$base ;;
    *) env_dir=$base/envs/$conda_env
       [ -d "$env_dir/conda-meta" ] || env_dir=$HOME/.conda/envs/$conda_env ;;
  esac
  [ -d "$env_dir/conda-meta" ] || { echo "conda environment '$conda_env' not found (conda at $base)" >&2; exit 13; }
fi
"""

LAUNCH = r"""
set -u
wd=$1 log=$2 status=$3 cmd=$4 conda_env=$5 prelude=$6 lock=$7 lock_token=$8
shift 8  # the rest goes to the prelude as it is
IFS= read -r head || { echo "no status record on stdin" >&2; exit 1; }  # one line: launch_args
""" + PREPARE + r"""
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=nohup; fi
# `&` starts the service with SIGINT and SIGQUIT ignored, and sh cannot undo that (`trap -` does not);
# GNU env can: the service gets them at their defaults, as a service the original launches does.
if env --default-signal=INT true 2>/dev/null; then signals="env --default-signal=INT,QUIT"; else signals=; fi
$detach $signals sh -c "$prelude" rhl-service "$status" "$cmd" "$conda_sh" "$conda_env" "$user_umask" \
  "$lock" "$lock_token" "$@" >>"$log" 2>&1 <<RHL_RECORD &
$head
RHL_RECORD
echo "$!"
"""


def launch_args(*, workdir: str, log: str, status_file: str, command: str, conda: str | None,
                lock: str = "", lock_token: str = "") -> list[str]:
    """Positional arguments of LAUNCH; its stdin is `record_head(...)`.

    The service removes `lock` once its record is written, if the lock still holds `lock_token`.
    """
    first, exec_text = exec_plan(command) or ("", "")
    return [workdir, log, status_file, command, conda or "", SERVICE_PRELUDE, lock, lock_token, first, exec_text]


def record_head(record: Mapping[str, Any]) -> bytes:
    """LAUNCH's stdin: the status record minus pid, start_time and uid, which the service adds. One line
    (JSON escapes newlines in strings), as the scripts' `read` takes it."""
    return (json.dumps(dict(record), separators=(", ", ": "))[:-1] + ", \n").encode()


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
    prelude expands it once more to check that it names a file, not a
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
