"""SLURM without a cluster: squeue's answers parsed, the submission's program and the job script run by a real
`sh` (sbatch replaced by a recording stand-in on PATH), hostile values included.

The real cluster (tests/slurm.py) covers the same code end to end in test_slurm.py.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from remote_http_launcher import scripts
from remote_http_launcher.schedulers import (
    ENDED,
    QUEUED,
    RUNNING,
    SCHEDULERS,
    JobInfo,
    job_script,
    submit_args,
    submit_input,
    submit_program,
)
from remote_http_launcher.schedulers.slurm import parse_query

SLURM = SCHEDULERS["slurm"]
HOSTILE = "a b'c\"d $(touch {pwned}) `touch {pwned}`;*\\ $HOME"
RECORD = {"workdir": "/w", "status": "starting", "token": "t0k", "meta": {"x": "y\nz"}, "key": "k"}


@pytest.mark.parametrize(("output", "expected"), [
    ("RUNNING|node1|None|7:59:12|8:00:00\n",
     JobInfo(RUNNING, "RUNNING", "node1", None, "7:59:12", None, None, 28752, 28800)),
    ("PENDING|(null)|Priority|1:00:00|1:00:00\n2026-12-07T13:00:00\n",
     JobInfo(QUEUED, "PENDING", None, "Priority", "1:00:00", "2026-12-07T13:00:00", None, None, 3600)),
    ("PENDING||PartitionTimeLimit|INVALID|2-00:00:00\nN/A\n",
     JobInfo(QUEUED, "PENDING", None, "PartitionTimeLimit", None, None, None, None, 172800)),
    ("RUNNING|n2|None|7:00|UNLIMITED\nrestarts 2\n", JobInfo(RUNNING, "RUNNING", "n2", None, "7:00", None, 2, 420)),
    ("PENDING|(null)|BeginTime|1:00|1:00\n2026-12-07T13:00:00\nrestarts 1\n",
     JobInfo(QUEUED, "PENDING", None, "BeginTime", "1:00", "2026-12-07T13:00:00", 1, None, 60)),
    ("RUNNING|n1|None|1:00|1:00\nrestarts \n", JobInfo(RUNNING, "RUNNING", "n1", None, "1:00", None, None, 60, 60)),
    ("CONFIGURING|n2|None|5:00|5:00\n", JobInfo(QUEUED, "CONFIGURING", "n2", None, "5:00", None, None, None, 300)),
    ("SUSPENDED|n1|None|1-02:03:04|3-00:00:00",
     JobInfo(RUNNING, "SUSPENDED", "n1", None, "1-02:03:04", None, None, 93784, 259200)),
    ("COMPLETING|n1|None|0:00|1:00", JobInfo(ENDED, "COMPLETING", "n1", None, "0:00", None, None, None, 60)),
    ("PENDING|n/a|Reason|with|bars|1:00|NOT_SET", JobInfo(QUEUED, "PENDING", None, "Reason|with|bars", "1:00")),
    ("RUNNING", JobInfo(RUNNING, "RUNNING")),
    ("GONE\n", JobInfo(ENDED, "GONE")),
    ("", JobInfo(ENDED, "GONE")),
])
def test_squeue_answers_are_parsed(output: str, expected: JobInfo) -> None:
    assert parse_query(output) == expected


def test_a_reason_that_never_clears_is_hopeless_only_while_queued() -> None:
    assert SLURM.hopeless(parse_query("PENDING||PartitionTimeLimit|1:00|1:00"))
    assert SLURM.hopeless(parse_query("PENDING||launch failed requeued held|1:00|1:00"))
    assert not SLURM.hopeless(parse_query("PENDING||Priority|1:00|1:00"))
    assert not SLURM.hopeless(parse_query("RUNNING|n1|PartitionTimeLimit|1:00|1:00"))


@pytest.mark.parametrize(("options", "seconds"), [
    (["--time=1"], 60), (["--time=0:30"], 60), (["--time=1:30"], 120), (["--time=08:00:00"], 28800),
    (["--time=2-12"], 216000), (["--time=1-00:00:01"], 86460), (["--time=5", "--time=10"], 600),
    (["--time=UNLIMITED"], None), (["--time=0"], None), (["--partition=short"], None), ([], None),
])
def test_the_walltime_sbatch_is_asked_for_in_whole_minutes(options: list[str], seconds: float | None) -> None:
    assert SLURM.walltime(options) == seconds


def test_renew_before_must_be_less_than_the_walltime_the_options_ask_for() -> None:
    from remote_http_launcher.errors import ConfigError
    from remote_http_launcher.schedulers import check_renewal

    check_renewal(SLURM, ["--time=2"], 119)
    check_renewal(SLURM, ["--partition=short"], 10**5)  # the queue's default limit: checked once the job runs
    check_renewal(SLURM, ["--time=1"], None)
    with pytest.raises(ConfigError, match=r"scheduler.renew_before: 120 s is not less than the job's walltime "
                                          r"\(120 s from scheduler.options\)"):
        check_renewal(SLURM, ["--time=2"], 120)


@pytest.fixture
def stub_sbatch(tmp_path: Path) -> Path:
    """`sbatch` on PATH that records its arguments (one a line) in $SBATCH_ARGS, prints $SBATCH_OUTPUT and
    exits $SBATCH_RC: what the submission makes of the answer is under test, not SLURM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "sbatch"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SBATCH_ARGS"\nprintf "%s\\n" "$SBATCH_OUTPUT"\n'
                    'exit "${SBATCH_RC:-0}"\n')
    stub.chmod(0o755)
    return bin_dir


def submit(tmp_path: Path, bin_dir: Path, output: str, rc: int = 0, options: tuple[str, ...] = (),
           record: str | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the submission's program as a launch does, the status file holding `record` if given; (its result,
    the state directory)."""
    state = tmp_path / "state"
    args = submit_args(workdir=str(tmp_path / "work dir"), log=str(state / "k.log"), status_file=str(state / "k.json"),
                       job_file=str(state / "k.job"), conda=None, name="k", lock=str(state / "k.lock"),
                       lock_token="t0k", options=list(options))
    state.mkdir(mode=0o700)
    (state / "k.lock").write_text('{"token": "t0k"}\n')
    if record is not None:
        (state / "k.json").write_text(record)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_OUTPUT": output,
           "SBATCH_RC": str(rc), "SBATCH_ARGS": str(tmp_path / "sbatch.args")}
    stdin = submit_input(SLURM, RECORD, "#!/bin/sh\necho the job\n")
    done = subprocess.run(["sh", "-c", submit_program(SLURM), "sh", *args], input=stdin.decode(),
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    return done, state


def test_a_submission_records_the_queued_job_and_releases_the_lock(tmp_path: Path, stub_sbatch: Path) -> None:
    done, state = submit(tmp_path, stub_sbatch, "sbatch: a warning\n4242;cluster1", options=("--time=1:00", "-p x"))
    assert (done.returncode, done.stdout) == (0, "4242\n"), done.stderr
    record = json.loads((state / "k.json").read_text())
    assert record == {**RECORD, "scheduler": "slurm", "job_id": "4242"}
    assert not (state / "k.lock").exists()
    assert (state / "k.job").read_text() == "#!/bin/sh\necho the job\n"
    # The config's options first, ours after them: the log stays beside the status file whatever they say.
    sbatch_args = (tmp_path / "sbatch.args").read_text().splitlines()
    assert sbatch_args[:3] == ["--parsable", "--time=1:00", "-p x"]
    assert sbatch_args[3:] == [f"--output={state}/k.log", "--open-mode=append", "--job-name=k",
                               f"--chdir={tmp_path}/work dir", f"{state}/k.job", "", umask()]


def umask() -> str:
    """This process's umask as sh's `umask` prints it."""
    current = os.umask(0o022)
    os.umask(current)
    return f"{current:04o}"


def test_a_record_the_job_wrote_first_is_kept(tmp_path: Path, stub_sbatch: Path) -> None:
    done, state = submit(tmp_path, stub_sbatch, "17", record='{"status": "running"}\n')
    assert done.returncode == 0, done.stderr
    assert json.loads((state / "k.json").read_text()) == {"status": "running"}


@pytest.mark.parametrize(("output", "rc", "message"), [
    ("sbatch: error: invalid partition specified: nope", 1, "sbatch: error: invalid partition specified: nope"),
    ("error: an sbatch that does not name itself", 1, "sbatch: error: an sbatch that does not name itself"),
    ("12 34", 0, "the scheduler's answer names no job: 12 34"),
    ("", 0, "the scheduler's answer names no job:"),
])
def test_a_refused_submission_exits_with_the_submit_code(tmp_path: Path, stub_sbatch: Path, output: str, rc: int,
                                                         message: str) -> None:
    done, state = submit(tmp_path, stub_sbatch, output, rc)
    assert done.returncode == scripts.Exit.SUBMIT
    assert done.stderr.strip().splitlines()[-1] == message
    assert not (state / "k.json").exists()
    assert (state / "k.lock").exists()  # the launcher releases it (the launch failed)


def test_the_job_script_quotes_every_value_and_records_the_job(tmp_path: Path) -> None:
    """The job script run as sbatch would (conda.sh's path and the umask as arguments, the job's id in the
    environment), with hostile workdir, status file, command and record: nothing is executed but the command,
    which gets its arguments intact; the record is the head, then the job's and the process's fields."""
    pwned = tmp_path / "pwned"
    hostile = HOSTILE.format(pwned=pwned)
    workdir = tmp_path / f"w {hostile}".replace("/", "_")
    workdir.mkdir()
    status = tmp_path / f"s {hostile}".replace("/", "_") / "k.json"
    status.parent.mkdir()
    command = f"{sys.executable} -c 'import sys; print(sys.argv[1:])' {shlex.quote(hostile)} x"
    record = {**RECORD, "meta": hostile, "workdir": str(workdir)}
    text = job_script(SLURM, workdir=str(workdir), status_file=str(status), record=record, command=command,
                      conda=None)
    assert text.startswith("#!/bin/sh\n# remote-http-launcher: the service's batch job\nset -- \"$1\" \"$2\" ")
    assert text.endswith(scripts.program("job"))
    job = tmp_path / "k.job"
    job.write_text(text)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SLURM_JOB_ID": "4242"}
    done = subprocess.run(["sh", str(job), "", "022"], capture_output=True, text=True, env=env, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    expected = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30,
                              check=True).stdout
    assert done.stdout == expected and "x" in expected
    assert not pwned.exists()
    written = json.loads(status.read_text())
    assert list(written)[-6:] == ["job_id", "node", "restarts", "pid", "start_time", "uid"]
    assert written == {**record, "scheduler": "slurm", "job_id": "4242", "node": socket.gethostname(), "restarts": 0,
                       "pid": written["pid"], "start_time": written["start_time"], "uid": os.getuid()}
    assert written["start_time"].startswith("proc:")


def test_a_job_whose_workdir_is_gone_exits_with_the_workdir_code(tmp_path: Path) -> None:
    text = job_script(SLURM, workdir=str(tmp_path / "gone"), status_file=str(tmp_path / "k.json"), record=RECORD,
                      command="true", conda=None)
    done = subprocess.run(["sh", "-c", text, "sh", "", "022"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == scripts.Exit.WORKDIR
    assert not (tmp_path / "k.json").exists()
