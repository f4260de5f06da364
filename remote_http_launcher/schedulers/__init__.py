"""Batch schedulers: a service can run as a job on a compute node, reached through the login node.

The launcher's state machine knows a job only through `Job` (which scheduler,
which id) and the neutral states of `base`; everything a particular scheduler
says or needs (its commands, its states, which pending reasons can never clear)
is in its own module. A status file names its scheduler and job id, so
`job_of` tells a job's record from a process's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Job,
    JobInfo,
    Scheduler,
    check_renewal,
    job_script,
    moved,
    recorded_run,
    run,
    submit_args,
    submit_input,
    submit_program,
)
from .oar import Oar
from .pbs import Pbs
from .sge import GridEngine
from .slurm import Slurm

if TYPE_CHECKING:
    from ..statefiles import ServerState

SCHEDULERS: dict[str, Scheduler] = {scheduler.name: scheduler
                                    for scheduler in (Slurm(), Pbs(), GridEngine(), Oar())}

__all__ = ["ENDED", "QUEUED", "RUNNING", "SCHEDULERS", "Job", "JobInfo", "Scheduler", "check_renewal", "job_of",
           "job_script", "moved", "recorded_run", "run", "submit_args", "submit_input", "submit_program"]


def job_of(state: ServerState | None) -> Job | None:
    """The batch job a status record names, or None for a record of a plain process."""
    if state is None:
        return None
    scheduler, job_id = SCHEDULERS.get(str(state.data.get("scheduler"))), state.data.get("job_id")
    if scheduler is None or not isinstance(job_id, str) or not job_id:
        return None
    return Job(scheduler, job_id)
