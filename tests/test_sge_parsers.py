"""Grid Engine without a cluster: sge_query.sh's answers (qstat's list line and `qstat -j`, as SGE 8.1.9 prints
them) parsed, the submission's program run by a real `sh` with a recording `qsub` on PATH.

The real cluster (tests/gridengine.py) covers the same code end to end in test_sge.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from remote_http_launcher import scripts
from remote_http_launcher.config import load_config
from remote_http_launcher.errors import ConfigError
from remote_http_launcher.schedulers import (
    ENDED,
    QUEUED,
    RUNNING,
    SCHEDULERS,
    JobInfo,
    submit_args,
    submit_input,
    submit_program,
)
from remote_http_launcher.schedulers.sge import parse_query

SGE = SCHEDULERS["sge"]
RECORD = {"workdir": "/w", "status": "starting", "token": "t0k", "key": "k"}
RUNNING_LINE = "rhl-list      7 0.50000 k          rhl        r     12/07/2026 15:50:11 rhltest.q@node1              1"
DETAIL = """==============================================================
job_number:                 7
exec_file:                  job_scripts/7
submission_time:            Mon Dec  7 15:50:05 2026
owner:                      rhl
hard resource_list:         mem_free=1G,h_rt=600
job_name:                   k
"""
USAGE = "usage         1:            cpu=00:00:00, mem=0.00000 GB s, io=0.00000 GB, vmem=N/A, maxvmem=N/A\n"
FULL = """scheduling info:            queue instance "rhltest.q@node1" dropped because it is full
                            All queues dropped because of overload or full
"""
TOO_LONG = 'scheduling info:            (-l h_rt=172800) cannot run in queue "rhltest.q" because of cluster queue\n'


def answer(list_line: str, detail: str = DETAIL, *extra: str, now: str = "12/07/2026 15:52:11") -> str:
    return "\n".join([list_line, f"rhl-now {now}", *extra, detail])


def pending(state: str = "qw") -> str:
    return f"rhl-list      7 0.50000 k          rhl        {state}   12/07/2026 15:50:05                   1"


@pytest.mark.parametrize(("output", "expected"), [
    (answer(RUNNING_LINE, DETAIL + USAGE), JobInfo(RUNNING, "r", "node1", None, "0:08:00")),
    # No h_rt of its own: its queue's limit, which sge_query.sh adds.
    (answer(RUNNING_LINE, DETAIL.replace("mem_free=1G,h_rt=600", "mem_free=1G"), "rhl-queue-h_rt 24:00:00"),
     JobInfo(RUNNING, "r", "node1", None, "23:58:00")),
    (answer(RUNNING_LINE, DETAIL.replace(",h_rt=600", ""), "rhl-queue-h_rt INFINITY"),
     JobInfo(RUNNING, "r", "node1", None, "UNLIMITED")),
    (answer(RUNNING_LINE, DETAIL.replace("h_rt=600", "h_rt=80000"), now="12/08/2026 15:50:11"),
     JobInfo(RUNNING, "r", "node1", None, "0:00:00")),
    (answer(RUNNING_LINE, DETAIL.replace("h_rt=600", "h_rt=180000"), now="12/08/2026 15:50:11"),
     JobInfo(RUNNING, "r", "node1", None, "1-02:00:00")),
    (answer(RUNNING_LINE, DETAIL.replace("h_rt=600", "h_rt=259200")),
     JobInfo(RUNNING, "r", "node1", None, "2-23:58:00")),
    (answer(RUNNING_LINE.replace(" r ", " s "), DETAIL), JobInfo(RUNNING, "s", "node1", None, "0:08:00")),
    (answer(RUNNING_LINE.replace(" r ", "dr "), DETAIL), JobInfo(RUNNING, "dr", "node1", None, "0:08:00")),
    (answer(RUNNING_LINE.replace(" r ", " t "), DETAIL), JobInfo(QUEUED, "t", "node1")),
    (answer(pending(), DETAIL + FULL), JobInfo(QUEUED, "qw", None,
                                               'queue instance "rhltest.q@node1" dropped because it is full')),
    (answer(pending(), DETAIL + TOO_LONG), JobInfo(QUEUED, "qw", None, TOO_LONG.partition(":")[2].strip())),
    # A limit of one queue does not make the job hopeless while another queue may take it.
    (answer(pending(), DETAIL + TOO_LONG + '                            queue instance "b.q@n2" dropped because it '
            'is full\n'), JobInfo(QUEUED, "qw", None, 'queue instance "b.q@n2" dropped because it is full')),
    (answer(pending("hqw"), DETAIL + "scheduling info:            Job is in hold state\n"),
     JobInfo(QUEUED, "hqw", None, "Job is in hold state")),
    (answer(pending(), DETAIL + "scheduling info:            (Collecting of scheduler job information is turned "
            "off)\n"), JobInfo(QUEUED, "qw")),
    (answer(pending(), DETAIL + "scheduling info:            There are no messages available\n"),
     JobInfo(QUEUED, "qw")),
    (answer(pending("Eqw"), DETAIL + "error reason    1:          12/07/2026 15:51:26 [1000:4242]: error: can't "
            "chdir to /gone: No such file or directory\n"),
     JobInfo(QUEUED, "Eqw", None, "error: 12/07/2026 15:51:26 [1000:4242]: error: can't chdir to /gone: "
             "No such file or directory")),
    (answer(pending("Eqw")), JobInfo(QUEUED, "Eqw", None, "error: the job is in error state")),
    (answer(pending("dqw")), JobInfo(ENDED, "dqw")),
    (answer("rhl-list ", DETAIL + USAGE), JobInfo(RUNNING, "unlisted")),
    (answer("rhl-list ", DETAIL), JobInfo(QUEUED, "unlisted")),
    ("GONE\n", JobInfo(ENDED, "GONE")),
    ("", JobInfo(ENDED, "GONE")),
])
def test_qstat_answers_are_parsed(output: str, expected: JobInfo) -> None:
    assert parse_query(output)._replace(seconds_left=None, walltime=None) == expected


def test_a_running_jobs_h_rt_and_seconds_left_are_known_for_its_renewal() -> None:
    info = parse_query(answer(RUNNING_LINE, DETAIL + USAGE))  # h_rt=600, started two minutes ago
    assert (info.walltime, info.seconds_left) == (600, 480)
    assert (parse_query(answer(RUNNING_LINE, DETAIL.replace("h_rt=600", "h_rt=INFINITY")))[-2:]) == (None, None)


def test_only_reasons_that_waiting_cannot_clear_are_hopeless() -> None:
    assert SGE.hopeless(parse_query(answer(pending(), DETAIL + TOO_LONG)))
    assert SGE.hopeless(parse_query(answer(pending(), DETAIL + 'scheduling info:            cannot run in queue '
                                           '"a.q@n1" because it offers only qf:h_rt=24:00:00\n')))
    assert SGE.hopeless(parse_query(answer(pending("Eqw"))))
    assert not SGE.hopeless(parse_query(answer(pending(), DETAIL + FULL)))
    assert not SGE.hopeless(parse_query(answer(pending("hqw"), DETAIL + "scheduling info:  Job is in hold state\n")))
    assert not SGE.hopeless(parse_query(answer(RUNNING_LINE, DETAIL + TOO_LONG)))


@pytest.fixture
def stub_qsub(tmp_path: Path) -> Path:
    """`qsub` on PATH that records its arguments (one a line) in $QSUB_ARGS, prints $QSUB_OUTPUT and exits
    $QSUB_RC: what the submission makes of the answer is under test, not Grid Engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "qsub"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$QSUB_ARGS"\nprintf "%s\\n" "$QSUB_OUTPUT"\n'
                    'exit "${QSUB_RC:-0}"\n')
    stub.chmod(0o755)
    return bin_dir


def submit(tmp_path: Path, bin_dir: Path, output: str, rc: int = 0, options: tuple[str, ...] = (),
           state_name: str = "state") -> tuple[subprocess.CompletedProcess[str], Path]:
    state = tmp_path / state_name
    args = submit_args(workdir=str(tmp_path / "work dir"), log=str(state / "k.log"), status_file=str(state / "k.json"),
                       job_file=str(state / "k.job"), conda=None, name="k", lock=str(state / "k.lock"),
                       lock_token="t0k", options=list(options))
    state.mkdir(mode=0o700)
    (state / "k.lock").write_text('{"token": "t0k"}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "QSUB_OUTPUT": output, "QSUB_RC": str(rc),
           "QSUB_ARGS": str(tmp_path / "qsub.args")}
    stdin = submit_input(SGE, RECORD, "#!/bin/sh\necho the job\n")
    done = subprocess.run(["sh", "-c", submit_program(SGE), "sh", *args], input=stdin.decode(),
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    return done, state


def test_a_submission_records_the_queued_job_with_our_options_last(tmp_path: Path, stub_qsub: Path) -> None:
    done, state = submit(tmp_path, stub_qsub, "4242", options=("-l", "h_rt=1:00:00", "-q", "a b.q"))
    assert (done.returncode, done.stdout) == (0, "4242\n"), done.stderr
    assert json.loads((state / "k.json").read_text()) == {**RECORD, "scheduler": "sge", "job_id": "4242"}
    assert not (state / "k.lock").exists()
    qsub_args = (tmp_path / "qsub.args").read_text().splitlines()
    assert qsub_args[:3] == ["-terse", "-w", "e"]
    assert qsub_args[3:8] == ["-notify", "-l", "h_rt=1:00:00", "-q", "a b.q"]
    assert qsub_args[8:] == ["-o", f"{state}/k.log", "-j", "y", "-N", "k", "-S", "/bin/sh", "-C", "",
                             f"{state}/k.job", "", umask()]


def test_an_array_jobs_answer_gives_its_id(tmp_path: Path, stub_qsub: Path) -> None:
    done, _ = submit(tmp_path, stub_qsub, "4243.1-10:1")
    assert (done.returncode, done.stdout) == (0, "4243\n"), done.stderr


def umask() -> str:
    current = os.umask(0o022)
    os.umask(current)
    return f"{current:04o}"


@pytest.mark.parametrize(("output", "message"), [
    ('Unable to run job: Job was rejected because job requests unknown queue "nope.q"\nExiting.',
     'qsub: Unable to run job: Job was rejected because job requests unknown queue "nope.q"'),
    ("Unable to run job: error: no suitable queues.\nExiting.", "qsub: Unable to run job: error: no suitable queues."),
])
def test_a_refused_submission_names_qsubs_reason(tmp_path: Path, stub_qsub: Path, output: str, message: str) -> None:
    done, state = submit(tmp_path, stub_qsub, output, 1)
    assert done.returncode == scripts.Exit.SUBMIT
    assert done.stderr.strip().splitlines()[-1] == message
    assert not (state / "k.json").exists()


def test_a_log_path_grid_engine_would_expand_is_refused(tmp_path: Path, stub_qsub: Path) -> None:
    done, _ = submit(tmp_path, stub_qsub, "1", state_name="$HOME")
    assert done.returncode == scripts.Exit.SUBMIT
    assert "holds a '$', which Grid Engine would expand" in done.stderr
    assert not (tmp_path / "qsub.args").exists()


def config(options: list[str]) -> dict[str, object]:
    return {"workdir": "/w", "key": "k", "command": "x", "scheduler": {"type": "sge", "options": options}}


def test_grid_engine_options_are_words_and_ours_are_refused() -> None:
    loaded = load_config(config(["-l", "h_rt=08:00:00", "-q", "short.q"]))
    assert loaded.scheduler is not None and loaded.scheduler.options == ("-l", "h_rt=08:00:00", "-q", "short.q")
    with pytest.raises(ConfigError, match=r"^scheduler.options: '-o' would take over -o, which the launcher sets "
                                          r"itself .*; drop it$"):
        load_config(config(["-o", "/tmp/x"]))
    with pytest.raises(ConfigError, match="is not one word of qsub's arguments"):
        load_config(config(["-l\nh_rt=1"]))
