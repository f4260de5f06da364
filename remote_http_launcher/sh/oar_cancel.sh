# oar_cancel JOB [SIGNAL]: deletes JOB; with a SIGNAL, sends it to the job's processes instead (oardel -s).
# oardel is found as rhl_use finds it.
rhl_use oardel
if [ -n "$2" ]; then "$rhl_command" -s "SIG$2" "$1"; else "$rhl_command" "$1"; fi >/dev/null 2>&1
exit 0
