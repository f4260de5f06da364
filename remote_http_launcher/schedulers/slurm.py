"""SLURM: sbatch, squeue, scancel (tested against Debian 12's SLURM 22.05, see tests/slurm.py)."""

from __future__ import annotations

from collections.abc import Sequence
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
NO_LIMIT = ("UNLIMITED", "INFINITE", "NOT_SET", "0")
DAY, HOUR, MINUTE = 86400, 3600, 60


class Slurm(Scheduler):
    name = "slurm"
    job_id_variable = "SLURM_JOB_ID"
    restarts_variable = "SLURM_RESTART_COUNT"
    submit = "slurm_submit"
    never_clears = NEVER_CLEARS
    commands = ("sbatch", "squeue", "scancel")

    def parse(self, output: str, job_id: str) -> JobInfo:
        return parse_query(output)

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        result = run(host, scripts.program("slurm_cancel"), [job_id, signal or ""])
        if result.returncode == scripts.Exit.NO_COMMAND:
            raise HostError(f"scancel on {host.name}: {result.stderr.strip()}", host=host.name, step="scancel")

    def walltime(self, options: Sequence[str]) -> float | None:
        """`--time=`'s limit (the last one counts, as for sbatch); SLURM keeps whole minutes, rounding up."""
        values = [option.removeprefix("--time=") for option in options if option.startswith("--time=")]
        seconds = duration(values[-1], bare_minutes=True) if values else None
        return None if seconds is None else -(-seconds // MINUTE) * MINUTE


def duration(text: str, *, bare_minutes: bool = False) -> float | None:
    """Seconds of a SLURM duration: [DAYS-][[HOURS:]MINUTES:]SECONDS as squeue prints it; `bare_minutes`:
    as sbatch --time reads it (MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]]).
    None for no limit or what is not a duration."""
    text = text.strip()
    if text.upper() in NO_LIMIT:
        return None
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not (days == "" or days.isdigit()) or not all(part.isdigit() for part in parts) or len(parts) > 3:
        return None
    numbers = [int(part) for part in parts]
    if days:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        numbers += [0] * (3 - len(numbers))
        units = [HOUR, MINUTE, 1]
    elif len(numbers) == 1:
        units = [MINUTE if bare_minutes else 1]
    else:
        units = [HOUR, MINUTE, 1][-len(numbers):]
    total = int(days or 0) * DAY + sum(number * unit for number, unit in zip(numbers, units, strict=True))
    return float(total) if total > 0 else None


def parse_query(output: str) -> JobInfo:
    """The job as slurm_query.sh's output describes it (its first line: STATE|NODE|REASON|TIME LEFT|LIMIT,
    where only REASON may hold a bar)."""
    lines = output.strip().splitlines()
    if not lines or lines[0] == "GONE":
        return JobInfo(ENDED, "GONE")
    raw_state, node, rest = ([*lines[0].split("|", 2), "", ""])[:3]
    reason, time_left, limit = ([*rest.rsplit("|", 2), "", ""] if rest.count("|") >= 2 else [rest, "", ""])[:3]
    counts = [line.removeprefix(RESTARTS) for line in lines[1:] if line.startswith(RESTARTS)]
    lines = [line for line in lines if not line.startswith(RESTARTS)]
    restarts = counts[0].strip() if counts else ""
    state = QUEUED if raw_state in QUEUED_STATES else RUNNING if raw_state in RUNNING_STATES else ENDED
    estimate = lines[1].strip() if len(lines) > 1 else ""
    return JobInfo(state, raw_state, _value(node), _value(reason) if state == QUEUED else None,
                   _value(time_left), _value(estimate), int(restarts) if restarts.strip().isdigit() else None,
                   duration(time_left) if state == RUNNING else None, duration(limit, bare_minutes=True))


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in NO_VALUE else text
