# read_status LIMIT PATH: read_file of a status file, then "PID START" on stderr for the first `"pid": N` in it,
# START being rhl_process_info's for N (empty: gone). A crude match: the caller uses it only if the PID it parses
# from the file is the same. It runs on every reconnect and `status`: two programs (head, sed), the rest builtins.
[ -e "$2" ] || exit "$rhl_exit_read_absent"
head -c "$1" -- "$2" || exit "$rhl_exit_read_failed"
pid=$(sed -n -e 's/"pid"[[:space:]]*:/"rhl-first-pid":/' -e '/"rhl-first-pid":[[:space:]]*[0-9]/{' \
  -e 's/^.*"rhl-first-pid":[[:space:]]*\([0-9][0-9]*\).*$/\1/p' -e q -e '}' "$2" 2>/dev/null)
[ -n "$pid" ] && [ ${#pid} -le 10 ] || exit 0
rhl_process_info "$pid" || rhl_info=
printf '%s %s\n' "$pid" "$rhl_info" >&2
