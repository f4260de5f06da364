# rhl_submit JOBFILE LOG NAME WORKDIR CONDA_SH UMASK OPTION...: submits JOBFILE to Grid Engine (inputs and
# outputs: slurm_submit.sh). `-w e` refuses at once a job no queue could ever run; `-notify` makes qdel send a
# warning signal before SIGKILL (sge.py); `-C ''` keeps qsub from reading `#$` lines of the job script as
# options (a quoted value may hold one); `-S /bin/sh`, as a queue's default shell may be csh. No `-wd`: the
# job script enters WORKDIR itself, as qsub would expand $HOME, $USER, $JOB_ID... in a path, which is also
# why LOG may hold no '$'. Our options come after the config's, so the log stays beside the status file.
# qsub is found as rhl_use finds it.
rhl_submit() {
  rhl_jobfile=$1 rhl_log=$2 rhl_name=$3 rhl_job_conda_sh=$5 rhl_job_umask=$6
  shift 6
  case $rhl_log in
    *'$'*) echo "qsub: the log path $rhl_log holds a '\$', which Grid Engine would expand; use a home directory without one" >&2
      exit "$rhl_exit_submit" ;;
  esac
  rhl_use qsub
  rhl_out=$("$rhl_command" -terse -w e -notify "$@" -o "$rhl_log" -j y -N "$rhl_name" -S /bin/sh -C '' \
    "$rhl_jobfile" "$rhl_job_conda_sh" "$rhl_job_umask" 2>&1) \
    || { printf '%s\n' "$rhl_out" | grep -v '^Exiting\.$' | tail -n 1 | sed 's/^/qsub: /' >&2; exit "$rhl_exit_submit"; }
  rhl_job_id=$(printf '%s\n' "$rhl_out" | tail -n 1)
  rhl_job_id=${rhl_job_id%%.*}  # an array job's answer: ID.FIRST-LAST:STEP
}
