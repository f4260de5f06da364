"""PBS: PBS Pro / OpenPBS and Torque (qsub, qstat, qdel).

Run for real only through SLURM's PBS wrappers (Debian's slurm-wlm-torque, see
tests/test_pbs.py); PBS Pro's `qstat -f -F json` and Torque's `qstat -f` text are
parsed as their documentation shows them (tests/test_pbs_parsers.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import scripts
from ..errors import HostError
from .base import ENDED, QUEUED, RUNNING, JobInfo, Scheduler, clock_seconds, run, timing

if TYPE_CHECKING:
    from ..hosts import Host

# job_state letters: Q queued, H held, W waiting for its start time, T in transit, M moved; R running,
# S and U suspended, B an array that began; E exiting, F finished, X an expired subjob, C completed (Torque).
QUEUED_STATES = frozenset("QHWTM")
RUNNING_STATES = frozenset("RSUB")
# PBS Pro's scheduler comments on a job it can never run ("Can Never Run: Insufficient amount of queue
# resource: ncpus (R: 100 A: 4 T: 4)").
NEVER_CLEARS = frozenset({"Can Never Run"})
GONE = "GONE"  # pbs_query.sh's answer for a job the server no longer knows


class Pbs(Scheduler):
    name = "pbs"
    job_id_variable = "PBS_JOBID"
    job_id_fallback = "SLURM_JOB_ID"  # SLURM's PBS wrappers (slurm-wlm-torque) submit SLURM jobs
    restarts_variable = None  # PBS tells a job no restart count
    submit = "pbs_submit"
    never_clears = NEVER_CLEARS
    commands = ("qsub", "qstat", "qdel")

    def parse(self, output: str, job_id: str) -> JobInfo:
        return parse_query(output, job_id)

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        result = run(host, scripts.program("pbs_cancel"), [job_id, signal or ""])
        if result.returncode == scripts.Exit.NO_COMMAND:
            raise HostError(f"qdel on {host.name}: {result.stderr.strip()}", host=host.name, step="qdel")


def parse_query(output: str, job_id: str) -> JobInfo:
    """The job as `qstat -f -F json` (PBS Pro, OpenPBS) or `qstat -f` (Torque) describes it."""
    text = output.strip()
    if not text or text == GONE:
        return JobInfo(ENDED, GONE)
    if text.startswith("{"):
        jobs = json.loads(text).get("Jobs") or {}
        job = jobs.get(job_id) or next(iter(jobs.values()), None)
        return _info(job) if isinstance(job, dict) else JobInfo(ENDED, GONE)
    return _info(parse_full(text))


def parse_full(text: str) -> dict[str, Any]:
    """Torque's `qstat -f` text as PBS Pro's JSON has it: `a.b = v` lines (continued on indented lines)
    into nested mappings."""
    job: dict[str, Any] = {}
    last: tuple[dict[str, Any], str] | None = None
    for line in text.splitlines():
        if line.startswith("Job Id:") or not line.strip():
            last = None
            continue
        name, sep, value = line.strip().partition(" = ")
        if not sep and last is not None:  # a long value goes on, on a line of its own
            where, key = last
            where[key] += line.strip()
            continue
        where = job
        *parents, key = name.split(".", 1) if "." in name else [name]
        for parent in parents:
            where = where.setdefault(parent, {})
        where[key] = value
        last = (where, key)
    return job


def _info(job: dict[str, Any]) -> JobInfo:
    state = str(job.get("job_state", ""))
    neutral = QUEUED if state in QUEUED_STATES else RUNNING if state in RUNNING_STATES else ENDED
    host = str(job.get("exec_host") or "")
    node = host.split("/", 1)[0].split("+", 1)[0] or None
    comment = job.get("comment")
    reason = str(comment) if neutral == QUEUED and comment else None
    estimated = job.get("estimated")
    start = estimated.get("start_time") if isinstance(estimated, dict) else None
    return JobInfo(neutral, state, node, reason, start_estimate=str(start) if start else None,
                   **timing(*_times(job)))


def _times(job: dict[str, Any]) -> tuple[int | None, int | None]:
    """The walltime asked for and what is left of it (seconds): Torque's Walltime.Remaining, else PBS Pro's
    requested walltime less the one used."""
    asked = _clock_seconds((job.get("Resource_List") or {}).get("walltime"))
    remaining = (job.get("Walltime") or {}).get("Remaining") if isinstance(job.get("Walltime"), dict) else None
    if remaining is not None and str(remaining).isdigit():
        return asked, int(remaining)
    used = _clock_seconds((job.get("resources_used") or {}).get("walltime")) or 0
    return asked, asked - used if asked is not None else None


def _clock_seconds(value: Any) -> int | None:
    """PBS's HH:MM:SS as seconds."""
    return clock_seconds(str(value)) if value is not None else None
