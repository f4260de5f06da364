# oar_query JOB: `oarstat -f -J -j JOB` (its JSON: state, node, walltime, start, message), then "rhl-now" and
# the login node's clock (seconds since the epoch), for the time left; "GONE" when OAR does not know the job.
# oarstat is found as rhl_use finds it.
rhl_use oarstat
out=$("$rhl_command" -f -J -j "$1" 2>&1) || {
  case $out in *"ot found"*|*"o job"*|*"does not exist"*) echo GONE; exit 0 ;; esac
  printf '%s\n' "$out" >&2; exit 1
}
case $out in *'"state"'*) ;; *) echo GONE; exit 0 ;; esac
printf 'rhl-now %s\n%s\n' "$(date +%s)" "$out"
exit 0
