# pbs_cancel JOB [SIGNAL]: with a SIGNAL, sends it to the job (qsig); where there is no qsig (SLURM's PBS
# wrappers) and without a SIGNAL, deletes the job (qdel: PBS sends SIGTERM, then SIGKILL after its kill delay).
# Both are found as rhl_use finds them.
if [ -n "$2" ] && rhl_command qsig; then
  echo "using qsig: $rhl_command" >&2
  "$rhl_command" -s "$2" "$1" 2>/dev/null
  exit 0
fi
rhl_use qdel
"$rhl_command" "$1" 2>/dev/null
exit 0
