# read_file LIMIT PATH: a state file in a kept shell (hosts/ssh.py): its first LIMIT bytes, as the SFTP read;
# exits rhl_exit_read_absent when it does not exist. Anything else (unreadable, a directory, no `head -c`) is
# left to SFTP.
[ -e "$2" ] || exit "$rhl_exit_read_absent"
exec head -c "$1" -- "$2"
