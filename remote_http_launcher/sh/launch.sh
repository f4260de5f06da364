# launch WORKDIR LOG STATUS COMMAND CONDA_ENV SERVICE LOCK TOKEN FIRST EXEC: prepares (rhl_prepare), then starts
# the program SERVICE (service.sh) detached, which becomes COMMAND; prints its PID. The status record's head comes
# on stdin (scripts.record_head: what may be secret never goes in arguments, which every user's `ps` shows).
# Then it waits here, briefly, for the service's record to leave "starting" (or the service to end) and prints
# the status file after the PID line: the launcher's first read of it, without a round trip of its own.
set -u
wd=$1 log=$2 status=$3 cmd=$4 conda_env=$5 service=$6 lock=$7 lock_token=$8
shift 8  # the rest goes to the service as it is
IFS= read -r head || { echo "no status record on stdin" >&2; exit 1; }  # one line: launch_args
rhl_prepare "$status" "$wd" "$log" "$conda_env"
if command -v setsid >/dev/null 2>&1; then detach="setsid"; else detach="nohup"; fi
# `&` starts the service with SIGINT and SIGQUIT ignored, and sh cannot undo that (`trap -` does not);
# GNU env can: the service gets them at their defaults, as a service the original launches does. Asked without a
# command, env only prints the environment: one process to learn whether it knows the option, not two.
if env --default-signal=INT >/dev/null 2>&1; then signals="env --default-signal=INT,QUIT"; else signals=; fi
# shellcheck disable=SC2086  # split on purpose: the wrapper commands' words
$detach $signals sh -c "$service" rhl-service "$status" "$cmd" "$rhl_conda_sh" "$conda_env" "$rhl_user_umask" \
  "$lock" "$lock_token" "$@" >>"$log" 2>&1 <<RHL_RECORD &
$head
RHL_RECORD
pid=$!
# A stock server (PORTS, the 14th argument) never leaves "starting" (the launcher checks its port): no wait.
[ -z "${6-}" ] || { echo "$pid"; exit 0; }
printf %s "$pid"
# 50 polls 0.02 s apart: most services report within that; a slower one is polled by the launcher as before.
# A `sleep` that takes no fraction (not GNU, BusyBox or BSD) ends the wait at once. Each poll adds a space to
# the PID line: once the caller is gone (killed, its connection closed) that write ends this shell (SIGPIPE).
polls=0
while [ "$polls" -lt 50 ] && kill -0 "$pid" 2>/dev/null; do
  case $(cat -- "$status" 2>/dev/null) in
    '' | *'"status": "starting"'*) ;;
    *) break ;;
  esac
  printf ' '
  sleep 0.02 2>/dev/null || break
  polls=$((polls + 1))
done
echo
cat -- "$status" 2>/dev/null
exit 0
