# slurm_query JOB: "STATE|NODE|REASON|TIME LEFT", then for a pending job its expected start; "GONE" when SLURM
# no longer knows it.
out=$(squeue -h -j "$1" -o '%T|%N|%r|%L' 2>&1) || {
  case $out in *"Invalid job id"*) echo GONE; exit 0 ;; esac
  printf '%s\n' "$out" >&2; exit 1
}
[ -n "$out" ] || { echo GONE; exit 0; }
printf '%s\n' "$out"
case $out in PENDING*) squeue --start -h -j "$1" -o '%S' 2>/dev/null ;; esac
exit 0
