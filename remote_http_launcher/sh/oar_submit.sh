# rhl_submit JOBFILE LOG NAME WORKDIR CONDA_SH UMASK OPTION...: submits JOBFILE to OAR (inputs and outputs:
# slurm_submit.sh). oarsub runs a command line, not a file with arguments: JOBFILE and its arguments are
# quoted into it. Without -S (--scanscript) oarsub reads no `#OAR` lines of the job script. Our options come
# after the config's, so the log stays beside the status file whatever they say. oarsub is found as rhl_use
# finds it.
rhl_submit() {
  rhl_jobfile=$1 rhl_log=$2 rhl_name=$3 rhl_wd=$4 rhl_job_conda_sh=$5 rhl_job_umask=$6
  shift 6
  case $rhl_log in
    *%*) echo "oarsub: the log path $rhl_log holds a '%', which OAR would expand; use a home directory without one" >&2
      exit "$rhl_exit_submit" ;;
  esac
  rhl_job_line=
  for rhl_word in sh "$rhl_jobfile" "$rhl_job_conda_sh" "$rhl_job_umask"; do
    rhl_job_line="$rhl_job_line '$(printf '%s' "$rhl_word" | sed "s/'/'\\\\''/g")'"
  done
  rhl_use oarsub
  rhl_out=$("$rhl_command" "$@" -O "$rhl_log" -E "$rhl_log" -n "$rhl_name" -d "$rhl_wd" "$rhl_job_line" 2>&1) \
    || { printf '%s\n' "$rhl_out" | grep -v '^ *$' | tail -n 1 | sed 's/^/oarsub: /' >&2; exit "$rhl_exit_submit"; }
  rhl_job_id=$(printf '%s\n' "$rhl_out" | sed -n 's/^OAR_JOB_ID=//p' | tail -n 1)
}
