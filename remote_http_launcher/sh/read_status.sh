# read_status LIMIT PATH PROCESS_INFO: read_file of a status file, then "PID START" on stderr for the first
# `"pid": N` in it, START being what the program PROCESS_INFO (process_info.sh) prints for N. A crude match: the
# caller uses it only if the PID it parses from the file is the same.
[ -e "$2" ] || exit "$rhl_exit_read_absent"
head -c "$1" -- "$2" || exit "$rhl_exit_read_failed"
pid=$(sed -n -e 's/"pid"[[:space:]]*:/"rhl-first-pid":/' \
  -e 's/^.*"rhl-first-pid":[[:space:]]*\([0-9][0-9]*\).*$/\1/p' "$2" 2>/dev/null | head -n 1)
[ -n "$pid" ] && [ ${#pid} -le 10 ] || exit 0
info=$(sh -c "$3" sh "$pid") || info=
printf '%s %s\n' "$pid" "$info" >&2
