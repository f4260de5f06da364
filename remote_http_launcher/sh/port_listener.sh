# port_listener PID PORT: without a handshake, anything accepting connections on the reported port would pass
# for the service (e.g. sshd on 22). Exits 0 when a process of the process group of PID holds a listening TCP
# socket on PORT (Linux: /proc/net/tcp{,6} give the socket's inode, the processes' fd links name it), 1 when
# none does, rhl_exit_cannot_tell without /proc/net/tcp (not Linux): then the port is unverified.
# port_listener PID -: prints the ports (hexadecimal, a line each) the process group of PID listens on, for
# a service that listens but never reported its port.
pid=$1
[ -r /proc/net/tcp ] || [ -r /proc/net/tcp6 ] || exit "$rhl_exit_cannot_tell"
pg=$pid  # the leader's group; its own when it is gone (its members keep the group's number)
rhl_stat "$pid" && pg=$rhl_pgid
if [ "$2" = - ]; then
  pairs=$(awk '$4 == "0A" { split($2, address, ":"); printf " %s:%s", $10, address[2] }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  for d in /proc/[0-9]*; do
    [ -n "$pairs" ] && rhl_stat "${d#/proc/}" && [ "$rhl_pgid" = "$pg" ] || continue
    links=$(ls -l "$d/fd" 2>/dev/null) || continue
    for pair in $pairs; do
      case $links in *"socket:[${pair%%:*}]"*) echo "${pair#*:}" ;; esac
    done
  done
  exit 0
fi
port=$(printf %04X "$2")
# One awk over the tables: sh's `read` takes a byte per system call, and a busy host's table has thousands of
# lines (seconds, where awk takes milliseconds).
inodes=$(awk -v port="$port" '$4 == "0A" { split($2, address, ":"); if (address[2] == port) printf " %s", $10 }' \
  /proc/net/tcp /proc/net/tcp6 2>/dev/null)
[ -n "$inodes" ] || exit 1
holds() {  # process directory $1 has one of those sockets open
  links=$(ls -l "$1/fd" 2>/dev/null) || return 1
  for inode in $inodes; do
    case $links in *"socket:[$inode]"*) return 0 ;; esac
  done
  return 1
}
holds "/proc/$pid" && exit 0  # the usual case, and no scan of every process (`read` takes a byte per call)
for d in /proc/[0-9]*; do
  rhl_stat "${d#/proc/}" || continue
  [ "$rhl_pgid" = "$pg" ] && [ "$d" != "/proc/$pid" ] && holds "$d" && exit 0
done
exit 1
