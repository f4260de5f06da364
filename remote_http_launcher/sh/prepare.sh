# rhl_prepare STATUS WORKDIR LOG CONDA_ENV: the first steps of a launch (launch.sh, and a batch job's submission:
# submit.sh): the state directory (STATUS's), WORKDIR (entered), an empty LOG, and for conda its conda.sh in
# $rhl_conda_sh. $rhl_user_umask is the caller's umask; the shell's own is then 077. Exits with the failed
# step's code, a line on stderr saying why.
rhl_prepare() {
  # Builtins and parameter expansions where they do: every external command is a fork and an exec, and every
  # $(...) a fork. The umask as Linux shows it (a read loop), else as `umask` prints it (the same digits).
  rhl_user_umask=
  if [ -r "/proc/$$/status" ]; then
    while read -r rhl_field rhl_value _; do
      [ "$rhl_field" = Umask: ] && rhl_user_umask=$rhl_value && break
    done < "/proc/$$/status"
  fi
  [ -n "$rhl_user_umask" ] || rhl_user_umask=$(umask)
  umask 077
  rhl_state_dir=${1%/*}
  case $rhl_state_dir in /*) ;; *) rhl_state_dir=$PWD/$rhl_state_dir ;; esac  # listed below from the workdir
  [ -d "$rhl_state_dir" ] || mkdir -p -- "$rhl_state_dir" \
    || { echo "cannot create state directory $rhl_state_dir" >&2; exit "$rhl_exit_state_dir"; }
  if [ ! -d "$2" ]; then  # mkdir's own words say why (a file in the way, no permission, a read-only disk)
    rhl_why=$(mkdir -p -- "$2" 2>&1) || { echo "cannot create workdir $2 (${rhl_why#mkdir: })" >&2; exit "$rhl_exit_workdir"; }
  fi
  cd -- "$2" 2>/dev/null || {
    [ -x "$2" ] && rhl_why="cannot enter it" || rhl_why="permission denied: no search (x) permission"
    echo "cannot enter workdir $2 ($rhl_why)" >&2; exit "$rhl_exit_workdir"
  }
  # Whoever may write the workdir may plant code the service runs (a json/__init__.py it imports): refused when
  # every user may and the directory is not sticky, else a warning (stderr's warning: lines reach the user).
  # One `ls` for both: the workdir (.) and the state directory, in that order (C collation: "." sorts before
  # any other path), the state directory then made private unless it is ours and already is.
  { read -r rhl_mode _ rhl_uid _; read -r rhl_state_mode _; } <<RHL_LS
$(LC_ALL=C ls -ldn -- . "$rhl_state_dir" 2>/dev/null)
RHL_LS
  case $rhl_state_mode in drwx------*) [ -O "$rhl_state_dir" ] ;; *) false ;; esac \
    || chmod 700 -- "$rhl_state_dir" \
    || { echo "cannot make state directory $rhl_state_dir private" >&2; exit "$rhl_exit_state_dir"; }
  case $rhl_mode in
    ????????w[!tT]*|????????w)
      echo "workdir $2 may be written by every user (mode $rhl_mode), so anyone could plant code the service runs; make it private (chmod o-w) or use another workdir" >&2
      exit "$rhl_exit_workdir" ;;
    ?????w*|????????w*) echo "warning: workdir $2 may be written by other users (mode $rhl_mode), who could plant code the service runs" >&2 ;;
  esac
  [ -O . ] || [ "$rhl_uid" = 0 ] \
    || echo "warning: workdir $2 belongs to another user (uid $rhl_uid), who could plant code the service runs" >&2
  # `true`, not `:`: a redirection error on a special built-in makes sh exit before `||` runs
  true 2>/dev/null > "$3" || { echo "cannot write log file $3" >&2; exit "$rhl_exit_log"; }
  rhl_conda_sh=
  [ -n "$4" ] || return 0
  rhl_find_conda "$4" || exit
}

# rhl_find_conda ENV: conda's conda.sh in $rhl_conda_sh, as a login shell would find conda, and ENV among its
# environments. Returns the failed step's code, a line on stderr saying why.
rhl_find_conda() {
  rhl_conda_sh=
  # shellcheck disable=SC2016  # $( in single quotes: sed's pattern
  for rhl_base in "${CONDA_EXE:+${CONDA_EXE%/bin/conda}}" \
      "$(command -v conda 2>/dev/null | sed 's#/\(bin\|condabin\)/conda$##')" \
      "$(rhl_login_which conda | sed 's#/\(bin\|condabin\)/conda$##')" \
      "$(sed -n "s#.*__conda_setup=\"\$('\(.*\)/bin/conda'.*#\1#p" "$HOME/.bashrc" 2>/dev/null | head -n 1)" \
      "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/miniconda3" "$HOME/anaconda3" \
      /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3; do
    if [ -n "$rhl_base" ] && [ -r "$rhl_base/etc/profile.d/conda.sh" ]; then
      rhl_conda_sh=$rhl_base/etc/profile.d/conda.sh
      break
    fi
  done
  [ -n "$rhl_conda_sh" ] || { echo "conda not found (looked in PATH, login shell, ~/.bashrc, ~/miniforge3, ~/miniconda3, ~/anaconda3, /opt/conda)" >&2; return "$rhl_exit_no_conda"; }
  rhl_base=${rhl_conda_sh%/etc/profile.d/conda.sh}
  case $1 in
    /*) rhl_env_dir=$1 ;;
    base) rhl_env_dir=$rhl_base ;;
    *) rhl_env_dir=$rhl_base/envs/$1
       [ -d "$rhl_env_dir/conda-meta" ] || rhl_env_dir=$HOME/.conda/envs/$1 ;;
  esac
  [ -d "$rhl_env_dir/conda-meta" ] || { echo "conda environment '$1' not found (conda at $rhl_base)" >&2; return "$rhl_exit_no_conda_env"; }
}
