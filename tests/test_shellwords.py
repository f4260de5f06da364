"""shellwords: whether a process runs a recorded command as the shell that launched it ran it.

Pure cases first (argument vectors as /proc shows them), then the same rule against processes that real
shells (bash and POSIX sh) started from those command lines. The rule over SSH, with the original's own
launches, is in tests/test_interop.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remote_http_launcher.shellwords import runs, simple_commands, variables
from tests.posix import SIGKILL, killpg

HOME = "/home/u"
STATUS = "~/.remote-http-launcher/server/k.json"
EXPANDED = f"{HOME}/.remote-http-launcher/server/k.json"


@pytest.mark.parametrize(("argv", "command"), [
    (["python3", "probe.py", "--status-file", EXPANDED], f"python3 probe.py --status-file {STATUS}"),
    (["python3", "x.py", f"{HOME}/my dir"], f"python3 x.py '{HOME}/my dir'"),
    (["python3", "x.py", "it's"], '''python3 x.py "it's"'''),
    (["python3", "x.py"], "cd '/w' && exec python3 x.py"),
    (["bash", "-c", "cd '/w' && python3 x.py"], "cd '/w' && python3 x.py"),
    (["/bin/bash", "-c", "source /opt/conda/etc/profile.d/conda.sh && conda activate env && python3 x.py"],
     "python3 x.py"),
    (["bash", "-lc", "source /opt/c.sh && conda activate env && exec python3 x.py --status-file " + EXPANDED],
     "python3 x.py --status-file " + EXPANDED),
    (["/usr/bin/python3", f"{HOME}/venv/bin/hashserver", "--port", "1", "/w"], "hashserver --port 1 /w"),
    (["python3", "x.py", "--dir", f"{HOME}/data"], "python3 x.py --dir $HOME/data"),
    (["python3", "x.py", "--dir", f"{HOME}/data"], "python3 x.py --dir ${HOME}/data"),
    (["python3", "x.py", "--dir", "/elsewhere/data"], "python3 x.py --dir $UNSET/data"),
    (["python3", "x.py"], "A=1 B='2 3' env C=4 python3 x.py > log 2>&1 </dev/null"),
    (["python3", "x.py", ""], "python3 x.py ''"),
    (["python3", "-u", "x.py", "--status-file=" + EXPANDED], "python3 -u x.py --status-file=" + EXPANDED),
], ids=["tilde", "quoted", "double-quoted", "cd-exec", "bash-c-wrapper", "conda-prefix-0.2", "conda-prefix-0.4",
        "script-by-name", "variable", "braced-variable", "unset-variable", "assignments-redirections",
        "empty-argument", "equals-form"])
def test_a_process_runs_the_command_its_shell_made_of_it(argv: list[str], command: str) -> None:
    assert runs(argv, command, HOME, {"HOME": HOME})


@pytest.mark.parametrize(("argv", "command"), [
    (["python3", "x.py", "--port", "2"], "python3 x.py --port 1"),
    (["sleep", "100"], "python3 x.py"),
    (["bash", "-c", "python3 y.py"], "python3 x.py"),
    (["vim", EXPANDED], f"python3 x.py --status-file {STATUS}"),
    (["python3", "x.py", "--status-file", f"/home/other/{STATUS[2:]}"], f"python3 x.py --status-file {STATUS}"),
    (["python3", "x.py"], "python3 x.py && echo done"),  # the shell runs x.py in a child: not this PID's
    (["python3", "x.py", "'/w'"], "python3 x.py '/w'"),
    ([], "python3 x.py"),
], ids=["other-argument", "other-program", "other-script", "viewer-of-the-file", "other-home", "not-last",
        "quotes-kept", "no-arguments"])
def test_another_process_does_not_run_it(argv: list[str], command: str) -> None:
    assert not runs(argv, command, HOME, {"HOME": HOME})


def test_parsing() -> None:
    commands = simple_commands("X=1 cd ~ && exec env -u Y nohup prog 'a b' 2>&1 | tee log; (sub)", HOME, {})
    assert commands is not None
    assert [[word.literal for word in words] for words in commands] == [
        ["cd", HOME], ["prog", "a b"], ["tee", "log"], ["sub"]]
    assert simple_commands("echo 'open", HOME, {}) is None
    assert variables("a $HOME ${USER} $1 '$X'") == ["HOME", "USER", "X"]  # quoted ones too: a superset is fine


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
@pytest.mark.parametrize("template", [
    "{python} {sleeper} --status-file ~/.remote-http-launcher/server/k.json",
    "cd {tmp} && exec {python} {sleeper} --dir '{tmp}' --home \"$HOME\"",
    "cd {tmp} && {python} {sleeper} --status-file=~/x",
    ". {tmp}/activate.sh && {python} {sleeper} --name \"a b\" >/dev/null 2>&1",
    "{tmp}/by-name --flag",
], ids=["tilde", "cd-exec-quoted", "cd-no-exec", "activation-prefix", "script-by-name"])
def test_real_shells_agree(tmp_path: Path, shell: str, template: str) -> None:
    """What /proc shows for a process a real shell started from the command line passes the check."""
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "activate.sh").write_text("ACTIVATED=1\n")
    by_name = tmp_path / "by-name"
    by_name.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    by_name.chmod(0o755)
    command = template.format(python=shlex.quote(sys.executable), sleeper=shlex.quote(str(sleeper)),
                              tmp=shlex.quote(str(tmp_path)))
    home = str(tmp_path)
    process = subprocess.Popen([shell, "-c", command], env={**os.environ, "HOME": home}, start_new_session=True)
    try:
        time.sleep(0.3)  # the shell or, once it has exec'ed, the program itself: either must pass
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert runs([arg.decode() for arg in argv], command, home, {"HOME": home}), argv
        assert not runs([arg.decode() for arg in argv], command.replace("--", "--other-"), home, {"HOME": home})
    finally:
        killpg(process.pid, SIGKILL)
        process.wait()
