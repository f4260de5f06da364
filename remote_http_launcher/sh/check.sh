# check.sh STATE_DIR WORKDIR CONDA_ENV PROGRAM COMMAND...: what a launch would need on this host, changing
# nothing (the `check` command): one line per finding, `NAME<tab>ok|fail|info<tab>DETAIL`. PROGRAM is the
# command's program ("" when it cannot be told, or conda decides it); COMMAND... the scheduler's commands.
state=$1 wd=$2 conda_env=$3 program=$4
shift 4
tab=$(printf '\t')

report() {
  printf '%s%s%s%s%s\n' "$1" "$tab" "$2" "$tab" "$3"
}

# could_make NAME DIR: DIR is a directory we may write, or the nearest directory above it that exists is.
could_make() {
  if [ -d "$2" ]; then
    if [ -w "$2" ] && [ -x "$2" ]; then report "$1" ok "$2 exists"; else report "$1" fail "$2 exists but is not writable"; fi
    return
  fi
  rhl_above=$2
  while [ ! -e "$rhl_above" ]; do
    rhl_above=${rhl_above%/*}
    [ -n "$rhl_above" ] || rhl_above=/
  done
  if [ -d "$rhl_above" ] && [ -w "$rhl_above" ] && [ -x "$rhl_above" ]; then
    report "$1" ok "$2 will be created"
  else
    report "$1" fail "$2 cannot be created: $rhl_above is not a writable directory"
  fi
}

report sh ok "$(command -v sh)"
python=$(command -v python3 2>/dev/null || command -v python 2>/dev/null)
report python info "${python:-none}"
could_make "state directory" "$state"
could_make workdir "$wd"
if [ -n "$conda_env" ]; then
  if found=$({ rhl_find_conda "$conda_env" && printf '%s' "${rhl_conda_sh%/etc/profile.d/conda.sh}"; } 2>&1); then
    report conda ok "environment '$conda_env' (conda at $found)"
  else
    report conda fail "$found"
  fi
fi
if [ -n "$program" ]; then
  if found=$(command -v -- "$program" 2>/dev/null); then report program ok "$found"; else report program fail "$program not found"; fi
fi
for command; do
  if rhl_command "$command"; then report scheduler ok "$rhl_command"; else report scheduler fail "$rhl_command_missing"; fi
done
