# slurm_cancel JOB [SIGNAL]: cancels JOB; with a SIGNAL, sent to every step and the batch script (`--full`;
# without it `scancel --signal` reaches only job steps and leaves the script, our service, running).
if [ -n "$2" ]; then scancel --full --signal="$2" "$1"; else scancel "$1"; fi 2>/dev/null
exit 0
