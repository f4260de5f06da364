# pbs_query JOB: the job as `qstat -f -F json` describes it (PBS Pro, OpenPBS), else as `qstat -f` does (Torque,
# and SLURM's PBS wrappers, which know no -F); "GONE" when the server no longer knows it (exit code 153: unknown
# job id; 35: finished, its history not asked for). qstat is found as rhl_use finds it.
rhl_use qstat
qstat=$rhl_command
if out=$("$qstat" -f -F json "$1" 2>/dev/null); then
  case $out in "{"*) printf '%s\n' "$out"; exit 0 ;; esac
fi
out=$("$qstat" -f "$1" 2>&1)
case $?:$out in
  0:?*) printf '%s\n' "$out" ;;
  0:|153:*|35:*|*"Unknown Job Id"*) echo GONE ;;
  *) printf '%s\n' "$out" >&2; exit 1 ;;
esac
exit 0
