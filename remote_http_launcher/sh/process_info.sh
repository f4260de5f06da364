# process_info PID: prints "<state> <start time>" of a process we may signal, or exits 1 when it is gone.
# The start time identifies the process across PID reuse.
pid=$1
kill -0 "$pid" 2>/dev/null || exit 1
if [ -r "/proc/$pid/stat" ]; then
  rhl_live "$pid" || exit 1
  echo "proc:$rhl_start"
else
  st=$(ps -o lstart= -p "$pid") || exit 1
  set -f
  # shellcheck disable=SC2086  # split on purpose: one space between ps's fields
  echo "ps:$(echo $st)"
fi
