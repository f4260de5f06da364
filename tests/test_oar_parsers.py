"""OAR without a cluster: `oarstat -f -J` answers parsed (the Waiting job is OAR 2.5.9's own output, from the
attempt at a real OAR described in docs/schedulers.md; the others follow its fields), the submission and the
cancel programs run by a real `sh` with recording `oarsub`/`oardel` stand-ins on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
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
from remote_http_launcher.schedulers.oar import parse_query

OAR = SCHEDULERS["oar"]
RECORD = {"workdir": "/w", "status": "starting", "token": "t0k", "key": "k"}
WAITING = {  # oarstat -J -j 1 of OAR 2.5.9 (Debian 12), a job waiting for its node
    "owner": "nobody", "state": "Waiting", "startTime": 0, "reservation": "None", "command": "sleep 60",
    "assigned_resources": [], "launchingDirectory": "/tmp", "project": "default", "message": "R=1,W=0:5:0,J=B",
    "stdout_file": "OAR.1.stdout", "stderr_file": "OAR.1.stderr", "resubmit_job_id": 0, "array_index": 1,
    "submissionTime": 1796661766, "array_id": 1, "dependencies": [], "types": [], "assigned_network_address": [],
    "name": None, "jobType": "PASSIVE", "properties": "(desktop_computing = 'NO') AND drain='NO'",
    "queue": "default", "Job_Id": 1, "cpuset_name": None}
RUNNING_JOB = {**WAITING, "state": "Running", "startTime": 1796661787, "walltime": 300,
               "assigned_network_address": ["node-3.cluster"], "message": "R=1,W=0:5:0,J=B (Karma=0.000,quota_ok)"}


def answer(job: dict[str, object] | None, job_id: str = "1", now: int = 1796661847) -> str:
    return f"rhl-now {now}\n" + json.dumps({job_id: job} if job is not None else {}, indent=3)


@pytest.mark.parametrize(("output", "expected"), [
    (answer(WAITING), JobInfo(QUEUED, "Waiting")),
    (answer({**WAITING, "scheduledStart": 1796665366}), JobInfo(QUEUED, "Waiting", None, None, None,
                                                                  "2026-12-07T17:42:46")),
    (answer({**WAITING, "message": "R=1,W=0:5:0,J=B (Karma=0.000,quota_ok) Not enough resources for now"}),
     JobInfo(QUEUED, "Waiting", None, "Not enough resources for now")),
    (answer({**WAITING, "state": "Hold"}), JobInfo(QUEUED, "Hold", None, "Hold")),
    (answer(RUNNING_JOB), JobInfo(RUNNING, "Running", "node-3.cluster", None, "0:04:00")),
    (answer({**RUNNING_JOB, "walltime": "2:0:0"}), JobInfo(RUNNING, "Running", "node-3.cluster", None, "1:59:00")),
    (answer({**RUNNING_JOB, "walltime": 90000}), JobInfo(RUNNING, "Running", "node-3.cluster", None, "1-00:59:00")),
    (answer({**RUNNING_JOB, "state": "Launching"}), JobInfo(QUEUED, "Launching", "node-3.cluster")),
    (answer({**RUNNING_JOB, "state": "Terminated"}), JobInfo(ENDED, "Terminated", "node-3.cluster")),
    (answer({**RUNNING_JOB, "state": "Error", "message": "One or several nodes are not responding correctly"}),
     JobInfo(ENDED, "Error", "node-3.cluster")),
    (answer(WAITING, job_id="2"), JobInfo(ENDED, "GONE")),
    (answer(None), JobInfo(ENDED, "GONE")),
    ("GONE\n", JobInfo(ENDED, "GONE")),
])
def test_oarstat_answers_are_parsed(output: str, expected: JobInfo) -> None:
    assert parse_query(output, "1")._replace(seconds_left=None, walltime=None) == expected


def test_a_running_jobs_walltime_and_seconds_left_are_known_for_its_renewal() -> None:
    info = parse_query(answer(RUNNING_JOB), "1")  # a walltime of 300 s, started a minute ago
    assert (info.walltime, info.seconds_left) == (300, 240)


def test_a_held_job_is_hopeless_a_waiting_one_is_not() -> None:
    assert OAR.hopeless(parse_query(answer({**WAITING, "state": "Hold"}), "1"))
    assert not OAR.hopeless(parse_query(answer(WAITING), "1"))


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    """`oarsub` and `oardel` on PATH that record their arguments (one a line) in $STUB_ARGS, print $STUB_OUTPUT
    and exit $STUB_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("oarsub", "oardel"):
        stub = bin_dir / name
        stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$STUB_ARGS"\nprintf "%s\\n" "$STUB_OUTPUT"\n'
                        'exit "${STUB_RC:-0}"\n')
        stub.chmod(0o755)
    return bin_dir


def env(tmp_path: Path, bin_dir: Path, output: str, rc: int) -> dict[str, str]:
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_OUTPUT": output, "STUB_RC": str(rc),
            "STUB_ARGS": str(tmp_path / "stub.args")}


def submit(tmp_path: Path, bin_dir: Path, output: str, rc: int = 0, options: tuple[str, ...] = (),
           state_name: str = "state it's") -> tuple[subprocess.CompletedProcess[str], Path]:
    state = tmp_path / state_name
    args = submit_args(workdir=str(tmp_path / "work dir"), log=str(state / "k.log"), status_file=str(state / "k.json"),
                       job_file=str(state / "k.job"), conda=None, name="k", lock=str(state / "k.lock"),
                       lock_token="t0k", options=list(options))
    state.mkdir(mode=0o700)
    (state / "k.lock").write_text('{"token": "t0k"}\n')
    stdin = submit_input(OAR, RECORD, "#!/bin/sh\necho the job\n")
    done = subprocess.run(["sh", "-c", submit_program(OAR), "sh", *args], input=stdin.decode(),
                          capture_output=True, text=True, env=env(tmp_path, bin_dir, output, rc), timeout=30,
                          check=False)
    return done, state


def test_a_submission_quotes_the_job_into_oarsubs_command_line(tmp_path: Path, stubs: Path) -> None:
    done, state = submit(tmp_path, stubs, "[ADMISSION RULE] Modify resource description with type constraints\n"
                         "OAR_JOB_ID=4242", options=("-l", "walltime=1:00:00"))
    assert (done.returncode, done.stdout) == (0, "4242\n"), done.stderr
    assert json.loads((state / "k.json").read_text()) == {**RECORD, "scheduler": "oar", "job_id": "4242"}
    oarsub_args = (tmp_path / "stub.args").read_text().splitlines()
    assert oarsub_args[:-1] == ["-l", "walltime=1:00:00", "-O", f"{state}/k.log", "-E", f"{state}/k.log", "-n",
                                "k", "-d", f"{tmp_path}/work dir"]
    # The command line OAR's shell runs: the job script and its arguments, each one word whatever it holds.
    words = subprocess.run(["sh", "-c", f'printf "%s\\n" {oarsub_args[-1]}'], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert words == ["sh", f"{state}/k.job", "", umask()]


def umask() -> str:
    current = os.umask(0o022)
    os.umask(current)
    return f"{current:04o}"


def test_a_refused_submission_names_oarsubs_reason(tmp_path: Path, stubs: Path) -> None:
    done, state = submit(tmp_path, stubs, "[ADMISSION RULE] Error: There are not enough resources for your "
                         "request\n", rc=1)
    assert done.returncode == scripts.Exit.SUBMIT
    assert done.stderr.strip().splitlines()[-1] == \
        "oarsub: [ADMISSION RULE] Error: There are not enough resources for your request"
    assert not (state / "k.json").exists()


def test_a_log_path_oar_would_expand_is_refused(tmp_path: Path, stubs: Path) -> None:
    done, _ = submit(tmp_path, stubs, "OAR_JOB_ID=1", state_name="100%jobid%")
    assert done.returncode == scripts.Exit.SUBMIT and "holds a '%'" in done.stderr
    assert not (tmp_path / "stub.args").exists()


@pytest.mark.parametrize(("signal", "expected"), [("TERM", ["-s", "SIGTERM", "77"]), (None, ["77"])])
def test_stop_signals_then_deletes(tmp_path: Path, stubs: Path, signal: str | None, expected: list[str]) -> None:
    subprocess.run(["sh", "-c", scripts.program("oar_cancel"), "sh", "77", signal or ""], check=True,
                   env=env(tmp_path, stubs, "", 0), timeout=30)
    assert (tmp_path / "stub.args").read_text().splitlines() == expected


def test_the_job_script_records_a_first_run(tmp_path: Path) -> None:
    """OAR restarts a job as a new job: the record's run is always the first."""
    text = job_script(OAR, workdir=str(tmp_path), status_file=str(tmp_path / "k.json"), record=RECORD,
                      command="true", conda=None)
    done = subprocess.run(["sh", "-c", text, "sh", "", "022"], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OAR_JOB_ID": "9"}, check=False)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "k.json").read_text())
    assert (written["job_id"], written["restarts"]) == ("9", 0)
