# rhl_submit JOBFILE LOG NAME WORKDIR CONDA_SH UMASK OPTION...: submits JOBFILE to SLURM with the config's
# OPTIONs, its output appended to LOG, named NAME, run in WORKDIR, given CONDA_SH and UMASK as its arguments;
# sets rhl_job_id, or exits rhl_exit_submit with sbatch's message on stderr. Our options come after the
# config's, so the log stays beside the status file whatever they say. sbatch is found as rhl_use finds it.
rhl_submit() {
  rhl_jobfile=$1 rhl_log=$2 rhl_name=$3 rhl_wd=$4 rhl_job_conda_sh=$5 rhl_job_umask=$6
  shift 6
  rhl_use sbatch
  rhl_out=$("$rhl_command" --parsable "$@" --output="$rhl_log" --open-mode=append --job-name="$rhl_name" \
    --chdir="$rhl_wd" "$rhl_jobfile" "$rhl_job_conda_sh" "$rhl_job_umask" 2>&1) \
    || {  # its last line, which says why; sbatch names itself there, else we do
      rhl_out=$(printf '%s\n' "$rhl_out" | tail -n 1)
      printf 'sbatch: %s\n' "${rhl_out#sbatch: }" >&2; exit "$rhl_exit_submit"
    }
  rhl_job_id=$(printf '%s\n' "$rhl_out" | tail -n 1)
  rhl_job_id=${rhl_job_id%%;*}
}
