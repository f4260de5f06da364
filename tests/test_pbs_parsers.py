"""PBS without a server: `qstat -f -F json` (PBS Professional, OpenPBS) and `qstat -f` text (Torque) parsed,
as their documentation describes them (attribute names from PBS Professional's Reference Guide, "Job
Attributes", and Torque's qstat page); a failed submission's message. Real commands: SLURM's PBS wrappers
on the test cluster (test_slurm.py).
"""

from __future__ import annotations

import json

import pytest

from remote_http_launcher.schedulers import ENDED, QUEUED, RUNNING, SCHEDULERS, JobInfo
from remote_http_launcher.schedulers.pbs import parse_query

PBS = SCHEDULERS["pbs"]


def pbs_pro(job_id: str, **attributes: object) -> str:
    """`qstat -f -F json JOB` of PBS Professional: the server's header, then the job's attributes."""
    return json.dumps({"timestamp": 1733580000, "pbs_version": "2022.1.1", "pbs_server": "pbs01",
                       "Jobs": {job_id: {"Job_Name": "jupyter", "Job_Owner": "alice@login01", **attributes}}},
                      indent=4)


RUNNING_JOB = pbs_pro(
    "1234.pbs01", job_state="R", queue="workq", exec_host="cn012/0*2", exec_vnode="(cn012:ncpus=2)",
    Resource_List={"ncpus": 2, "nodect": 1, "place": "free", "select": "1:ncpus=2", "walltime": "08:00:00"},
    resources_used={"cpupercent": 0, "cput": "00:00:00", "ncpus": 2, "walltime": "00:10:30"},
    comment="Job run at Sat Dec 07 at 14:00 on (cn012:ncpus=2)", run_count=1)
QUEUED_JOB = pbs_pro(
    "1235.pbs01", job_state="Q", queue="workq",
    Resource_List={"ncpus": 64, "nodect": 1, "select": "1:ncpus=64", "walltime": "01:00:00"},
    comment="Not Running: Insufficient amount of resource: ncpus (R: 64 A: 16 T: 128)",
    estimated={"exec_vnode": "(cn001:ncpus=64)", "start_time": "Sat Dec  7 16:00:00 2024"})
NEVER_JOB = pbs_pro(
    "1236.pbs01", job_state="Q", queue="workq", Resource_List={"ncpus": 1000, "walltime": "01:00:00"},
    comment="Can Never Run: Insufficient amount of queue resource: ncpus (R: 1000 A: 128 T: 128)")
# Torque's `qstat -f`: `name = value` lines under "Job Id:", long values continued on tab-indented lines.
TORQUE_JOB = """Job Id: 77.torque01.cluster
    Job_Name = jupyter
    Job_Owner = alice@login01.cluster
    resources_used.cput = 00:00:01
    resources_used.walltime = 00:02:10
    job_state = R
    queue = batch
    server = torque01.cluster
    exec_host = cn003/0-1+cn004/0-1
    Resource_List.nodes = 1:ppn=2
    Resource_List.walltime = 02:00:00
    Walltime.Remaining = 7070
    Variable_List = PBS_O_QUEUE=batch,PBS_O_HOME=/home/alice,PBS_O_LOGNAME=al
\tice,PBS_O_WORKDIR=/home/alice
"""
TORQUE_QUEUED = """Job Id: 78.torque01.cluster
    Job_Name = jupyter
    job_state = Q
    queue = batch
    Resource_List.walltime = 02:00:00
    comment = job held, too many jobs in queue
"""
# SLURM's PBS wrappers (slurm-wlm-torque's qstat -f): a tab before each attribute, no comment, no remaining time.
WRAPPER_JOB = """Job Id:\t15
\tJob_Name = rhl-key
\tJob_Owner = alice@login
\tjob_state = R
\tqueue = rhltest
\texec_host = node0/1
\tResource_List.walltime = 00:30:00
"""


@pytest.mark.parametrize(("output", "job_id", "expected"), [
    (RUNNING_JOB, "1234.pbs01", JobInfo(RUNNING, "R", "cn012", None, "7:49:30", None)),
    (QUEUED_JOB, "1235.pbs01", JobInfo(QUEUED, "Q", None, "Not Running: Insufficient amount of resource: ncpus "
                                       "(R: 64 A: 16 T: 128)", "1:00:00", "Sat Dec  7 16:00:00 2024")),
    (TORQUE_JOB, "77.torque01.cluster", JobInfo(RUNNING, "R", "cn003", None, "1:57:50", None)),
    (TORQUE_QUEUED, "78", JobInfo(QUEUED, "Q", None, "job held, too many jobs in queue", "2:00:00", None)),
    (WRAPPER_JOB, "15", JobInfo(RUNNING, "R", "node0", None, "0:30:00", None)),
    (pbs_pro("9.pbs01", job_state="E", exec_host="cn1/0"), "9.pbs01", JobInfo(ENDED, "E", "cn1", None, None, None)),
    (pbs_pro("9.pbs01", job_state="F"), "9.pbs01", JobInfo(ENDED, "F", None, None, None, None)),
    (WRAPPER_JOB.replace("= R", "= C"), "15", JobInfo(ENDED, "C", "node0", None, "0:30:00", None)),
    ("GONE\n", "15", JobInfo(ENDED, "GONE")),
    ("", "15", JobInfo(ENDED, "GONE")),
])
def test_qstat_answers(output: str, job_id: str, expected: JobInfo) -> None:
    assert parse_query(output, job_id)._replace(seconds_left=None, walltime=None) == expected


@pytest.mark.parametrize(("output", "job_id", "walltime", "left"), [
    (RUNNING_JOB, "1234.pbs01", 8 * 3600, 8 * 3600 - 630),  # PBS Pro: asked for less used
    (TORQUE_JOB, "77.torque01.cluster", 2 * 3600, 7070),  # Torque: Walltime.Remaining
    (WRAPPER_JOB, "15", 1800, 1800),  # the wrappers tell no used walltime
])
def test_a_running_jobs_walltime_and_seconds_left_are_known_for_its_renewal(output: str, job_id: str,
                                                                          walltime: int | None, left: int) -> None:
    info = parse_query(output, job_id)
    assert (info.walltime, info.seconds_left) == (walltime, left)


def test_a_job_pbs_can_never_run_is_hopeless_and_one_waiting_for_resources_is_not() -> None:
    assert PBS.hopeless(parse_query(NEVER_JOB, "1236.pbs01"))
    assert not PBS.hopeless(parse_query(QUEUED_JOB, "1235.pbs01"))


def test_held_waiting_and_moving_jobs_are_queued_suspended_ones_running() -> None:
    for state in "QHWTM":
        assert parse_query(pbs_pro("1.s", job_state=state), "1.s").state == QUEUED
    for state in "RSUB":
        assert parse_query(pbs_pro("1.s", job_state=state), "1.s").state == RUNNING
