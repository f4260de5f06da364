# slurm_query JOB: "STATE|NODE|REASON|TIME LEFT|TIME LIMIT", then for a pending job its expected start, then
# "restarts N": how often the job was requeued (each restart a new run of the job script, on a node and port of
# its own); "GONE" when SLURM no longer knows it. squeue is found as rhl_use finds it.
rhl_use squeue
squeue=$rhl_command
out=$("$squeue" -h -j "$1" -o '%T|%N|%r|%L|%l' 2>&1) || {
  case $out in *"Invalid job id"*) echo GONE; exit 0 ;; esac
  printf '%s\n' "$out" >&2; exit 1
}
[ -n "$out" ] || { echo GONE; exit 0; }
printf '%s\n' "$out"
case $out in PENDING*) "$squeue" --start -h -j "$1" -o '%S' 2>/dev/null ;; esac
printf 'restarts %s\n' "$("$squeue" -h -j "$1" -O RestartCnt 2>/dev/null | tr -d ' ')"
exit 0
