# kill_group PGID: kills what is left of process group PGID after its leader is gone.
kill -s KILL -- "-$1" 2>/dev/null
