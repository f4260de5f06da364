"""POSIX `sh` scripts that run on the service's host, locally or over SSH.

The same text runs in both places, so local mode exercises exactly the code
path that remote hosts get. Values are never interpolated into script text:
they travel as positional arguments (quoted by the SSH host, passed as argv
locally), so no config value can inject a command.
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

# Exits 0 while a process that is not a zombie still belongs to process group $1.
GROUP_ALIVE = r"""
pg=$1
if [ -d /proc/self ]; then
  for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    rest=${line##*) }
    set -f; set -- $rest; set +f
    [ "$3" = "$pg" ] && [ "$1" != Z ] && exit 0
  done
  exit 1
fi
kill -0 -- "-$pg" 2>/dev/null
"""

# Sends signal $1 to the process group led by $2 (or to $2 alone when it leads no group).
SIGNAL_GROUP = 'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"'

# Kills what is left of process group $1 after its leader is gone.
KILL_GROUP = 'kill -s KILL -- "-$1" 2>/dev/null'

# The service's own first steps (it runs detached, as the new session leader):
# record its PID and start time in the status file, release the launch lock
# (other runs now find this process in the status file), then become the command.
SERVICE_PRELUDE = r"""
set -f
status=$1 head=$2 cmd=$3 conda_sh=$4 conda_env=$5 user_umask=$6 lock=$7 lock_token=$8
if [ -r "/proc/$$/stat" ]; then
  read -r line < "/proc/$$/stat"; line=${line##*) }; set -- $line; st="proc:${20}"
else
  st="ps:$(echo $(ps -o lstart= -p $$))"
fi
uid=
if [ -r "/proc/$$/status" ]; then
  while read -r field value _; do [ "$field" = Uid: ] && uid=$value && break; done < "/proc/$$/status"
fi
printf '%s"pid": %s, "start_time": "%s", "uid": %s}\n' "$head" "$$" "$st" "${uid:-$(id -u)}" > "$status.$$.tmp" \
  && mv -f "$status.$$.tmp" "$status" || { echo "remote-http-launcher: cannot write $status"; exit 1; }
if [ -n "$lock" ] && [ -n "$lock_token" ]; then
  held=
  IFS= read -r held 2>/dev/null < "$lock"
  case $held in *"$lock_token"*) rm -f -- "$lock" ;; esac  # only the lock of the launch that started us
fi
set +f
umask "$user_umask"
if [ -n "$conda_env" ]; then
  . "$conda_sh" && conda activate "$conda_env" || { echo "remote-http-launcher: conda activate $conda_env failed"; exit 1; }
fi
exec sh -c "$cmd"
"""

LAUNCH = r"""
set -u
wd=$1 log=$2 status=$3 head=$4 cmd=$5 conda_env=$6 prelude=$7 lock=$8 lock_token=$9
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
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=nohup; fi
$detach sh -c "$prelude" rhl-service "$status" "$head" "$cmd" "$conda_sh" "$conda_env" "$user_umask" "$lock" "$lock_token" \
  </dev/null >>"$log" 2>&1 &
echo "$!"
"""


def launch_args(*, workdir: str, log: str, status_file: str, command: str, conda: str | None,
                record: Mapping[str, Any], lock: str = "", lock_token: str = "") -> list[str]:
    """Positional arguments of LAUNCH; `record` is the status file minus pid, start_time and uid.

    The service removes `lock` once its record is written, if the lock still holds `lock_token`.
    """
    head = json.dumps(dict(record), separators=(", ", ": "))[:-1] + ", "
    return [workdir, log, status_file, head, command, conda or "", SERVICE_PRELUDE, lock, lock_token]
