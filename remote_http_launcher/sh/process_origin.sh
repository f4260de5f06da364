# process_origin PID NAME...: for a status file without our start time (the original's): prints the start of
# process PID in seconds since the epoch (a blank line when unknown); then "argv" and its arguments one a line
# (Linux), or "text" and its command line as `ps` shows it; before those, the value of each variable NAME in
# its environment ("+value", or "-" when unset or unreadable), for expanding the recorded command as its shell
# did. Exits 1 when it is gone or not ours to signal.
pid=$1
shift
names=$*  # identifiers (checked by the caller): safe to split again
kill -0 "$pid" 2>/dev/null || exit 1
if [ -r "/proc/$pid/stat" ] && [ -r /proc/stat ]; then
  rhl_stat "$pid" || exit 1
  ticks=$rhl_start started=
  hz=$(getconf CLK_TCK 2>/dev/null) || hz=100
  while read -r name value _; do
    [ "$name" = btime ] && started=$((value + ticks / ${hz:-100})) && break
  done < /proc/stat
  echo "$started"
  echo argv
  for name in $names; do
    value=$(tr '\000' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -m 1 "^$name=") && echo "+${value#*=}" || echo -
  done
  tr '\000' '\n' < "/proc/$pid/cmdline"
else
  elapsed=$(ps -o etimes= -p "$pid" 2>/dev/null) && started=$(($(date +%s) - elapsed)) || started=
  echo "$started"
  echo text
  for name in $names; do echo -; done
  ps -ww -o args= -p "$pid"
fi
