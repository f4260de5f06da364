# group_alive PGID: exits 0 while process group PGID has a member that has not ended although its leader (PID
# PGID) has: a service that outlived its `sh -c` wrapper. A live PID PGID (of any user) means no such group: a
# group ID is not reused while the group has members.
pg=$1
if [ -d /proc/self ]; then
  rhl_live "$pg" && exit 1
  for d in /proc/[0-9]*; do
    rhl_live "${d#/proc/}" && [ "$rhl_pgid" = "$pg" ] && exit 0
  done
  exit 1
fi
ps -p "$pg" >/dev/null 2>&1 && exit 1
kill -0 -- "-$pg" 2>/dev/null
