# The prelude of every program (scripts.program): definitions shared by them, one copy each. Programs follow it
# in the same text, so their positional parameters are their own; names here start with rhl_.

# Exit codes beyond 0 (yes, done) and 1 (no, or a failure); scripts.Exit holds the same table (a test checks).
# shellcheck disable=SC2034  # each program uses some
rhl_exit_cannot_tell=3 rhl_exit_read_absent=3 rhl_exit_read_failed=4 rhl_exit_workdir=10 rhl_exit_log=11 \
  rhl_exit_no_conda=12 rhl_exit_no_conda_env=13 rhl_exit_state_dir=14 rhl_exit_submit=15 rhl_exit_no_command=16

# rhl_login_which NAME: NAME's path as the user's login shell finds it (its profile may add to PATH: a site's
# /etc/profile.d, a module system); empty when it does not. Its profile's own output comes first: the last line.
rhl_login_which() {
  # shellcheck disable=SC2016  # $1: the login shell's
  rhl_which=$("${SHELL:-sh}" -lc 'command -v -- "$1"' rhl "$1" 2>/dev/null </dev/null)
  printf '%s\n' "${rhl_which##*
}"
}

# rhl_command NAME: the program NAME in $rhl_command, on this shell's PATH or else as the login shell finds it
# (as conda is found); returns 1 when neither does, a line saying where it looked in $rhl_command_missing.
rhl_command() {
  rhl_command=$(command -v -- "$1" 2>/dev/null)
  case $rhl_command in /*) return 0 ;; esac
  rhl_command=$(rhl_login_which "$1")
  case $rhl_command in /*) return 0 ;; esac
  rhl_command_missing="$1 not found on PATH ($PATH) nor by the login shell (${SHELL:-sh} -l)"
  return 1
}

# rhl_use NAME: rhl_command NAME, saying on stderr which one is used (a line the launcher logs at debug level:
# scripts.USING); when there is none, exits rhl_exit_no_command with the line saying where it looked.
rhl_use() {
  rhl_command "$1" || { echo "$rhl_command_missing" >&2; exit "$rhl_exit_no_command"; }
  echo "using $1: $rhl_command" >&2
}

# rhl_stat PID: from /proc/PID/stat, rhl_state (one letter: R, S, Z...), rhl_pgid (its process group) and
# rhl_start (its start in clock ticks since boot: with the PID, the process's identity across PID reuse).
# Returns 1 when that file cannot be read (the process is gone, or there is no /proc).
rhl_stat() {
  { read -r rhl_line < "/proc/$1/stat"; } 2>/dev/null || return 1
  # The fields after the command's name, which may hold spaces and `)`: the last ") " ends it.
  # shellcheck disable=SC2086  # split on purpose: numbers and one letter, nothing to glob
  set -- ${rhl_line##*) }
  # shellcheck disable=SC2034  # each program uses some
  rhl_state=$1 rhl_pgid=$3 rhl_start=${20-}
}

# rhl_live PID: rhl_stat PID, and the process has not ended: a zombie (Z) or a dead one (X) is gone.
rhl_live() {
  rhl_stat "$1" || return 1
  case $rhl_state in Z|X) return 1 ;; esac
}

# rhl_process_info PID: rhl_info is "<kind>:<start>" of a live process we may signal, its identity across PID
# reuse (/proc's start in clock ticks since boot, else `ps`'s start date); returns 1 when it is gone or not ours
# to signal (another user's: kill -0 is refused).
rhl_process_info() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    rhl_live "$1" || return 1
    rhl_info=proc:$rhl_start
  else
    rhl_info=$(ps -o lstart= -p "$1") || return 1
    # shellcheck disable=SC2086  # split on purpose: one space between ps's fields
    rhl_info=ps:$(set -f; echo $rhl_info)
  fi
}

# rhl_release_lock LOCK TOKEN: removes the launch lock LOCK if it still holds TOKEN (locks.py writes it in the
# first line): only the lock of the launch that started us, never one taken since.
rhl_release_lock() {
  [ -n "$1" ] && [ -n "$2" ] || return 0
  rhl_held=
  { IFS= read -r rhl_held < "$1"; } 2>/dev/null
  case $rhl_held in *"$2"*) rm -f -- "$1" ;; esac
}

# rhl_write_record FILE HOW HEAD MEMBER...: writes the status record FILE: HEAD (its first members as JSON, each
# followed by ", ": scripts.record_head), then each MEMBER, NAME=VALUE (a string) or NAME:VALUE (a number),
# VALUE holding no `"`, `\` or control character. Through a temporary file, renamed over FILE (HOW=replace),
# or linked to FILE only where there is none (HOW=create: a record written meanwhile stays).
rhl_write_record() {
  rhl_record_file=$1 rhl_record_how=$2 rhl_record=$3
  shift 3
  for rhl_member; do
    case $rhl_member in
      *=*) rhl_record="$rhl_record\"${rhl_member%%=*}\": \"${rhl_member#*=}\", " ;;
      *) rhl_record="$rhl_record\"${rhl_member%%:*}\": ${rhl_member#*:}, " ;;
    esac
  done
  printf '%s}\n' "${rhl_record%, }" > "$rhl_record_file.$$.tmp" || return 1
  if [ "$rhl_record_how" = create ]; then
    ln -- "$rhl_record_file.$$.tmp" "$rhl_record_file" 2>/dev/null
    rm -f -- "$rhl_record_file.$$.tmp"
  else
    mv -f -- "$rhl_record_file.$$.tmp" "$rhl_record_file"
  fi
}
