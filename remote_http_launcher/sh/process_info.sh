# process_info PID: prints "<kind>:<start time>" of a process we may signal (rhl_process_info), or exits 1 when it
# is gone. The start time identifies the process across PID reuse.
rhl_process_info "$1" || exit 1
echo "$rhl_info"
