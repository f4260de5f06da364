# submit WORKDIR LOG STATUS CONDA_ENV JOBFILE NAME LOCK TOKEN OPTION...: runs on the login node after the
# scheduler's library (e.g. slurm_submit.sh), which defines rhl_submit. Prepares as a launch does
# (rhl_prepare), writes the job script JOBFILE beside the status file, submits it with the config's OPTIONs, then
# records the queued job in the status file unless the job already wrote its own record, and releases the
# launch lock: from here on, the record tells other runs what to wait for. Prints the job's id. On stdin: the
# record's head (one line: scripts.record_head), then the job script (both hold what may be secret).
set -u
wd=$1 log=$2 status=$3 conda_env=$4 jobfile=$5 name=$6 lock=$7 lock_token=$8
shift 8  # the rest: the config's submit options
IFS= read -r head || { echo "no status record on stdin" >&2; exit 1; }  # one line: submit_input
job=$(cat)  # the rest of stdin
rhl_prepare "$status" "$wd" "$log" "$conda_env"
printf '%s\n' "$job" > "$jobfile" || { echo "cannot write the job script $jobfile" >&2; exit "$rhl_exit_state_dir"; }
rhl_job_id=
rhl_submit "$jobfile" "$log" "$name" "$wd" "$rhl_conda_sh" "$rhl_user_umask" "$@"
case $rhl_job_id in
  ''|*[!A-Za-z0-9_.+-]*) echo "the scheduler's answer names no job: $rhl_job_id" >&2; exit "$rhl_exit_submit" ;;
esac
rhl_write_record "$status" create "$head" "job_id=$rhl_job_id"
rhl_release_lock "$lock" "$lock_token"
echo "$rhl_job_id"
