# key_processes STATUS: prints "<pid> <process group>" of each live process of this user that a launch of the
# status file STATUS started (or one of their children): ours carry REMOTE_HTTP_LAUNCHER_STATUS_FILE=STATUS in
# their environment (service.sh), whatever the status file now says, and other users' environments are
# unreadable; the original's carry STATUS among their arguments (`--status-file STATUS`,
# `--status-file=STATUS`: its commands are told where the file is), which is checked for this user's processes
# only.
want="REMOTE_HTTP_LAUNCHER_STATUS_FILE=$1"
if printf 'x\000' | grep -qzxF x 2>/dev/null; then  # one grep for all (GNU, BusyBox); else one per process
  found=$(grep -lzxF -- "$want" /proc/[0-9]*/environ 2>/dev/null)
  named=$(grep -lzF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null)
else
  found=$(for f in /proc/[0-9]*/environ; do
    tr '\000' '\n' < "$f" 2>/dev/null | grep -qxF -- "$want" && echo "$f"
  done)
  named=$(for f in /proc/[0-9]*/cmdline; do
    tr '\000' '\n' < "$f" 2>/dev/null | grep -qF -- "$1" && echo "$f"
  done)
fi
me=$(id -u)
for f in $named; do  # the status file as a whole argument, or after `=`, of a process of this user
  d=${f%/cmdline}
  [ "${d#/proc/}" = "$$" ] && continue
  uid=
  while read -r field value _; do [ "$field" = Uid: ] && uid=$value && break; done < "$d/status" 2>/dev/null
  [ "$uid" = "$me" ] || continue
  args=$(tr '\000' '\n' < "$f" 2>/dev/null) || continue
  while IFS= read -r arg; do
    case $arg in "$1"|*="$1") found="$found $d/environ"; break ;; esac
  done <<RHL_ARGS
$args
RHL_ARGS
done
for f in $(printf '%s\n' $found | sort -u); do
  d=${f%/environ}
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  rhl_live "$pid" && echo "$pid $rhl_pgid"
done
