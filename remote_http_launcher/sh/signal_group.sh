# signal_group SIGNAL PID: sends SIGNAL to the process group led by PID (or to PID alone when it leads none).
kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"
