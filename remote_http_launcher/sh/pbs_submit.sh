# rhl_submit JOBFILE LOG NAME WORKDIR CONDA_SH UMASK OPTION...: submits JOBFILE with qsub (found as rhl_use finds
# it) and the config's OPTIONs, named NAME; sets rhl_job_id, or exits rhl_exit_submit with qsub's message on
# stderr. PBS passes a job script no arguments, and stages its output to -o's file only when it ends, so
# JOBFILE gets a line of its own first: its arguments (CONDA_SH, UMASK), and its output appended to LOG as it
# goes (-o and -e are /dev/null). PBS starts a job in the home directory: job.sh enters WORKDIR.
rhl_submit() {
  rhl_jobfile=$1 rhl_log=$2 rhl_name=$3
  rhl_first="set -- $(rhl_quote "$5") $(rhl_quote "$6"); exec >>$(rhl_quote "$rhl_log") 2>&1"
  shift 6
  rhl_use qsub
  rhl_body=$(cat -- "$rhl_jobfile") && printf '#!/bin/sh\n%s\n%s\n' "$rhl_first" "$rhl_body" > "$rhl_jobfile" \
    || { echo "cannot write the job script $rhl_jobfile" >&2; exit "$rhl_exit_state_dir"; }
  rhl_out=$("$rhl_command" "$@" -N "$rhl_name" -j oe -o /dev/null "$rhl_jobfile" 2>&1) \
    || { printf 'qsub: %s\n' "$rhl_out" | tail -n 1 >&2; exit "$rhl_exit_submit"; }
  rhl_job_id=$(printf '%s\n' "$rhl_out" | tail -n 1)
}

# rhl_quote VALUE: VALUE as one single-quoted sh word.
rhl_quote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}
