# service STATUS COMMAND CONDA_SH CONDA_ENV UMASK LOCK TOKEN FIRST EXEC [JOB_ID NODE RESTARTS [PORTS [SETUP]]]: the
# service's own first steps (it runs detached, as the new session leader, or as a batch job: job.sh). It records
# its PID and start time in the status file STATUS, with JOB_ID, NODE and RESTARTS (the job's run) for a job,
# after the record's head it reads on stdin (one
# line: launch.sh's here-document, never an argument); releases the launch lock (other runs now find this
# process in the status file); then becomes COMMAND. A simple command whose name is a file (a path, or found on
# PATH: not a builtin or function) is exec'ed by this shell itself (FIRST and EXEC: scripts.exec_plan), so the
# recorded PID is the service's own: helpers that signal only that PID (the original's rhl-stop) stop the
# service, not a shell above it. Anything else runs under `sh -c`, whose PID is recorded (its process group
# holds the service). Variables are prefixed: the command is eval'ed in this shell.
# PORTS (a stock server's, scripts.ports_spec): "START END NAME=PLACEHOLDER...": for each NAME a TCP port from
# START to END that no socket on this host uses, put in place of PLACEHOLDER in COMMAND (and the record) and
# recorded as "stock_ports"; the launcher says `running` once the service listens there.
# SETUP: the config's setup lines, one per line, each eval'ed as written before conda's activation and COMMAND;
# the first that fails ends the service with a line naming it in the log (scripts.SETUP_FAILED).
set -f
rhl_status=$1 rhl_cmd=$2 rhl_conda_sh=$3 rhl_conda_env=$4 rhl_umask=$5 rhl_lock=$6 rhl_lock_token=$7
rhl_first=$8 rhl_exec=$9 rhl_job_id=${10-} rhl_node=${11-} rhl_run=${12-0} rhl_ports=${13-} rhl_setup=${14-}
case $rhl_run in ''|*[!0-9]*) rhl_run=0 ;; esac
IFS= read -r rhl_head
exec </dev/null
# rhl_replace TEXT FROM TO: TEXT with every FROM replaced by TO, in $rhl_out.
rhl_replace() {
  rhl_out='' rhl_rest=$1
  while :; do
    case $rhl_rest in
      *"$2"*) rhl_out=$rhl_out${rhl_rest%%"$2"*}$3 rhl_rest=${rhl_rest#*"$2"} ;;
      *) break ;;
    esac
  done
  rhl_out=$rhl_out$rhl_rest
}
rhl_chosen=
if [ -n "$rhl_ports" ]; then
  # shellcheck disable=SC2086  # split on purpose: words without spaces (globbing is off)
  set -- $rhl_ports
  rhl_low=$1 rhl_span=$(($2 - $1 + 1))
  shift 2
  # The local ports of every TCP socket here (any state), as /proc/net/tcp writes them: 4 hex digits.
  rhl_used=" $(awk '{ sub(/.*:/, "", $2); printf "%s ", $2 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)"
  for rhl_spec; do
    rhl_tries=0
    while :; do
      rhl_draw=$(od -An -N4 -tu4 /dev/urandom 2>/dev/null) || rhl_draw=$$
      rhl_port=$((rhl_low + ${rhl_draw:-$$} % rhl_span))
      case "$rhl_used " in *" $(printf %04X "$rhl_port") "*) ;; *) break ;; esac
      rhl_tries=$((rhl_tries + 1))
      [ "$rhl_tries" -lt 100 ] || { echo "remote-http-launcher: no free port from $rhl_low to $((rhl_low + rhl_span - 1))"; exit 1; }
    done
    rhl_used="$rhl_used $(printf %04X "$rhl_port")"
    rhl_chosen="$rhl_chosen, \"${rhl_spec%%=*}\": $rhl_port"
    for rhl_var in rhl_cmd rhl_first rhl_exec rhl_head; do
      eval "rhl_replace \"\$$rhl_var\" \"\${rhl_spec#*=}\" $rhl_port"
      eval "$rhl_var=\$rhl_out"
    done
  done
  rhl_chosen="stock_ports:{${rhl_chosen#, }}"
fi
if rhl_stat "$$"; then
  rhl_st="proc:$rhl_start"
else
  # shellcheck disable=SC2046  # split on purpose: one space between ps's fields
  rhl_st="ps:$(echo $(ps -o lstart= -p $$))"
fi
rhl_uid=
if [ -r "/proc/$$/status" ]; then
  while read -r rhl_field rhl_value _; do [ "$rhl_field" = Uid: ] && rhl_uid=$rhl_value && break; done < "/proc/$$/status"
fi
if [ -n "$rhl_job_id" ]; then set -- "job_id=$rhl_job_id" "node=$rhl_node" "restarts:$rhl_run"; else set --; fi
[ -z "$rhl_chosen" ] || set -- "$@" "$rhl_chosen"
rhl_write_record "$rhl_status" replace "$rhl_head" "$@" "pid:$$" "start_time=$rhl_st" "uid:${rhl_uid:-$(id -u)}" \
  || { echo "remote-http-launcher: cannot write $rhl_status"; exit 1; }
rhl_release_lock "$rhl_lock" "$rhl_lock_token"
set +f
umask "$rhl_umask"
export REMOTE_HTTP_LAUNCHER_STATUS_FILE="$rhl_status"  # how `stop` finds the key's processes (key_processes.sh)
if [ -n "$rhl_setup" ]; then
  # `source` as bash has it, where sh lacks it (dash): setup lines are often written for bash.
  # shellcheck source=/dev/null  # the user's file
  command -v source >/dev/null 2>&1 || source() { . "$@"; }
  rhl_nl='
'
  rhl_setup_number=0
  while [ -n "$rhl_setup" ]; do
    rhl_setup_line=${rhl_setup%%"$rhl_nl"*}
    case $rhl_setup in *"$rhl_nl"*) rhl_setup=${rhl_setup#*"$rhl_nl"} ;; *) rhl_setup= ;; esac
    rhl_setup_number=$((rhl_setup_number + 1))
    eval "$rhl_setup_line" \
      || { echo "remote-http-launcher: setup line $rhl_setup_number failed (status $?): $rhl_setup_line"; exit 1; }
  done
fi
if [ -n "$rhl_conda_env" ]; then
  # shellcheck source=/dev/null  # the conda.sh rhl_prepare found
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
