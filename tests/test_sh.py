"""The shell programs (remote_http_launcher/sh): syntax, shellcheck, the exit-code table, the prelude's pieces.

Each program is checked as it runs: the prelude, its libraries, then its own
file (scripts.program), and the generated job script as a whole. The
prelude's functions are run with a real `sh` on crafted inputs.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from remote_http_launcher import scripts
from remote_http_launcher.processes import start_time_from_stat
from remote_http_launcher.schedulers import SCHEDULERS, job_script, submit_program

SH_DIR = Path(scripts.__file__).with_name("sh")
FILES = sorted(path.stem for path in SH_DIR.glob("*.sh"))
LIBRARIES = {"prepare", *(scheduler.submit for scheduler in SCHEDULERS.values())}  # functions for the next file
HOSTILE = "a b'c\"d$(touch /tmp/rhl-pwned)`id`;\n*\\"


def program_names() -> list[str]:
    """scripts.Name's programs, read from its source: a type for the type checker, never built at run time."""
    tree = ast.parse(Path(scripts.__file__).read_text(encoding="utf-8"))
    name = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and [getattr(target, "id", None) for target in node.targets] == ["Name"])
    assert isinstance(name.value, ast.Subscript) and isinstance(name.value.slice, ast.Tuple)
    return [str(ast.literal_eval(element)) for element in name.value.slice.elts]


def texts() -> dict[str, str]:
    """Every program as `sh -c` gets it, libraries alone (after the prelude), and a job script."""
    found: dict[str, str] = {}
    for name in program_names():
        if name in ("launch", "start", "check"):
            found[name] = scripts.program("prepare", name)
        elif name == "submit":
            for scheduler in SCHEDULERS.values():
                found[f"submit ({scheduler.name})"] = submit_program(scheduler)
        else:
            found[name] = scripts.program(name)
    for scheduler in SCHEDULERS.values():
        found[f"job script ({scheduler.name})"] = job_script(
            scheduler, workdir=f"/w/{HOSTILE}", status_file=f"/s/{HOSTILE}.json", record={"meta": HOSTILE},
            command=f"prog {HOSTILE}", conda=HOSTILE)
    return found


def test_every_file_is_a_program_name() -> None:
    assert sorted([*program_names(), scripts.PRELUDE]) == FILES


@pytest.mark.parametrize("name", FILES)
def test_sh_parses_each_file(name: str) -> None:
    checked = subprocess.run(["sh", "-n", str(SH_DIR / f"{name}.sh")], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(("name", "text"), sorted(texts().items()))
def test_shellcheck_passes_each_program_as_it_runs(name: str, text: str) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is needed (apt-get install shellcheck; .ci/run does)"
    checked = subprocess.run([shellcheck, "-s", "sh", "-S", "warning", "-"], input=text, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout


EXIT_CODES = {name: code for name, code in vars(scripts.Exit).items() if name.isupper()}


def test_the_prelude_names_exactly_the_exit_table() -> None:
    named = {name: int(value) for name, value in
             re.findall(r"\brhl_exit_(\w+)=(\d+)", (SH_DIR / "prelude.sh").read_text())}
    assert named == {name.lower(): code for name, code in EXIT_CODES.items()}


@pytest.mark.parametrize("name", FILES)
def test_every_exit_code_is_0_1_or_named(name: str) -> None:
    """Codes the launcher acts on are scripts.Exit's names, never bare numbers; 0 and 1 are yes and no."""
    text = re.sub(r"(^|\s)#.*", r"\1", (SH_DIR / f"{name}.sh").read_text(), flags=re.MULTILINE)  # no comments
    codes = re.findall(r"\b(?:exit|return)[ \t]+([^\s;|&)]+)", text)
    defined = {f'"$rhl_exit_{member.lower()}"' for member in EXIT_CODES}
    assert [code for code in codes if code not in {"0", "1", *defined}] == []
    if name != scripts.PRELUDE:
        assert re.findall(r"\brhl_exit_\w+=", text) == []  # named in the prelude only


def run_prelude(snippet: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`snippet` after the prelude alone (scripts.program with no file), run by sh with `args`."""
    return subprocess.run(["sh", "-c", scripts.program() + snippet, "sh", *args], capture_output=True, text=True,
                          check=False, cwd=cwd)


STAT_TAIL = "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 123456 0 0 0 0 0 0 0 0 0 0 0 0 0 0"


@pytest.mark.parametrize("state", ["R", "S", "D", "T", "I", "Z", "X"])
@pytest.mark.parametrize("comm", ["python3", "a) b", "x ) S 1 2 3", ")"])
def test_the_shell_and_python_agree_on_a_process_identity(tmp_path: Path, state: str, comm: str) -> None:
    """rhl_live (every program's /proc/PID/stat reader) and processes.start_time_from_stat: a zombie (Z) or
    dead (X) process is gone in both; otherwise both give the start time, whatever the command's name holds."""
    line = f"4242 ({comm}) {state} 1 4242 4242 0 -1 4194560 {STAT_TAIL}\n"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "stat").write_text(line)
    # A PID argument is only a path component: ../tmp/.../p names the crafted file (/proc/../tmp/.../p/stat).
    shell = run_prelude('rhl_live "$1" && echo "proc:$rhl_start $rhl_pgid"', f"..{tmp_path}/p")
    python = start_time_from_stat(line.encode())
    assert (shell.stdout.split()[0] if shell.stdout else None) == python
    assert (python is None) == (state in "ZX")
    if python is not None:
        assert shell.stdout.split()[1] == "4242"  # the process group


def test_the_record_is_json_and_create_keeps_a_record_written_meanwhile(tmp_path: Path) -> None:
    status = tmp_path / "s.json"
    head = json.dumps({"status": "starting", "meta": "a b"})[:-1] + ", "
    wrote = run_prelude('rhl_write_record "$1" replace "$2" "job_id=12.3" "pid:$$" "start_time=ps:Mon Dec  7"',
                        str(status), head)
    assert wrote.returncode == 0, wrote.stderr
    record = json.loads(status.read_text())
    assert record == {"status": "starting", "meta": "a b", "job_id": "12.3", "pid": record["pid"],
                      "start_time": "ps:Mon Dec  7"}
    assert isinstance(record["pid"], int)
    assert status.read_text().endswith('"start_time": "ps:Mon Dec  7"}\n')
    assert run_prelude('rhl_write_record "$1" create "{" "job_id=9"', str(status)).returncode == 0
    assert json.loads(status.read_text())["job_id"] == "12.3"  # not replaced
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left
    status.unlink()
    assert run_prelude('rhl_write_record "$1" create "{" "job_id=9"', str(status)).returncode == 0
    assert json.loads(status.read_text()) == {"job_id": "9"}


def test_the_lock_is_released_only_by_its_token(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    lock.write_text(json.dumps({"token": "abc123"}) + "\n")
    for token in ("other", ""):
        assert run_prelude('rhl_release_lock "$1" "$2"', str(lock), token).returncode == 0
        assert lock.exists()
    assert run_prelude('rhl_release_lock "$1" "$2"', str(tmp_path / "absent"), "abc123").returncode == 0
    assert run_prelude('rhl_release_lock "$1" "$2"', str(lock), "abc123").returncode == 0
    assert not lock.exists()


def test_programs_are_read_once() -> None:
    scripts.program.cache_clear()
    first = scripts.program("process_info")
    assert scripts.program("process_info") is first
    assert first.startswith((SH_DIR / "prelude.sh").read_text())
    assert first.endswith((SH_DIR / "process_info.sh").read_text())
