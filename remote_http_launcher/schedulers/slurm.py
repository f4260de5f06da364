"""SLURM: sbatch, squeue, scancel (tested against Debian 12's SLURM 22.05, see tests/slurm.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import scripts
from ..errors import HostError
from .base import ENDED, QUEUED, RUNNING, JobInfo, Scheduler, run

if TYPE_CHECKING:
    from ..hosts import Host

QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "STOPPED", "SIGNALING"})
# Pending reasons that waiting never clears (squeue's %r): the job asks for what the partition, account or
# QOS does not allow, for nodes or features that do not exist, or was held after failing to launch.
NEVER_CLEARS = frozenset({
    "AccountNotAllowed", "BadConstraints", "DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS",
    "JobHeldAdmin", "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "QOSNotAllowed",
    "ReservationDeleted", "launch failed requeued held",
})
RESTARTS = "restarts"  # slurm_query.sh's line with the job's restart count
NO_VALUE = ("", "(null)", "N/A", "None", "INVALID", "n/a")


class Slurm(Scheduler):
    name = "slurm"
    job_id_variable = "SLURM_JOB_ID"
    restarts_variable = "SLURM_RESTART_COUNT"
    submit = "slurm_submit"
    never_clears = NEVER_CLEARS
    commands = ("sbatch", "squeue", "scancel")

    def query(self, host: Host, job_id: str) -> JobInfo:
        result = run(host, scripts.program("slurm_query"), [job_id])
        if result.returncode != 0:
            raise HostError(f"squeue on {host.name}: {result.stderr.strip() or 'failed'}", host=host.name,
                            step="squeue")
        return parse_query(result.stdout)

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        result = run(host, scripts.program("slurm_cancel"), [job_id, signal or ""])
        if result.returncode == scripts.Exit.NO_COMMAND:
            raise HostError(f"scancel on {host.name}: {result.stderr.strip()}", host=host.name, step="scancel")


def parse_query(output: str) -> JobInfo:
    """The job as slurm_query.sh's output describes it."""
    lines = output.strip().splitlines()
    if not lines or lines[0] == "GONE":
        return JobInfo(ENDED, "GONE")
    raw_state, node, reason, time_left = ([*lines[0].split("|", 3), "", "", ""])[:4]
    counts = [line.removeprefix(RESTARTS) for line in lines[1:] if line.startswith(RESTARTS)]
    lines = [line for line in lines if not line.startswith(RESTARTS)]
    restarts = counts[0].strip() if counts else ""
    state = QUEUED if raw_state in QUEUED_STATES else RUNNING if raw_state in RUNNING_STATES else ENDED
    estimate = lines[1].strip() if len(lines) > 1 else ""
    return JobInfo(state, raw_state, _value(node), _value(reason) if state == QUEUED else None,
                   _value(time_left), _value(estimate), int(restarts) if restarts.strip().isdigit() else None)


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in NO_VALUE else text
