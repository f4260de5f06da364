# slurm_cancel JOB [SIGNAL]: cancels JOB; with a SIGNAL, sent to every step and the batch script (`--full`;
# without it `scancel --signal` reaches only job steps and leaves the script, our service, running). scancel
# is found as rhl_use finds it.
rhl_use scancel
if [ -n "$2" ]; then "$rhl_command" --full --signal="$2" "$1"; else "$rhl_command" "$1"; fi 2>/dev/null
exit 0
