# start WORKDIR LOG STATUS COMMAND CONDA_ENV SERVICE LOCK TOKEN FIRST EXEC...: launch.sh for a caller that detaches
# this shell itself, as a session of its own with SIGINT and SIGQUIT at their defaults (this machine's launcher:
# hosts/local.py). Prepares (rhl_prepare), prints its PID, then runs the program SERVICE (service.sh) itself, its
# output going to LOG: no `&`, setsid, env or second shell in between. The status record's head stays on stdin
# for SERVICE.
set -u
wd=$1 log=$2 status=$3 cmd=$4 conda_env=$5 service=$6 lock=$7 lock_token=$8
shift 8  # the rest goes to the service as it is
rhl_prepare "$status" "$wd" "$log" "$conda_env"
echo "$$"
exec >>"$log" 2>&1  # the caller reads to the end of stdout and stderr: it has the PID
set -- "$status" "$cmd" "$rhl_conda_sh" "$conda_env" "$rhl_user_umask" "$lock" "$lock_token" "$@"
unset wd log status cmd conda_env lock lock_token
set +u  # as `sh -c` would run it: the setup lines and the command are eval'ed in this shell
eval "$service"
