"""SLURM: sbatch, squeue, scancel (tested against Debian 12's SLURM 22.05, see tests/slurm.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import HostError
from .base import ENDED, QUEUED, RUNNING, JobInfo, Scheduler

if TYPE_CHECKING:
    from ..hosts import Host

# Our options come after the config's, so the log stays beside the status file whatever they say.
SUBMIT = r"""
out=$(sbatch --parsable "$@" --output="$log" --open-mode=append --job-name="$name" --chdir="$wd" \
  "$jobfile" "$conda_sh" "$user_umask" 2>&1) || { printf 'sbatch: %s\n' "$out" | tail -n 1 >&2; exit 15; }
job_id=$(printf '%s\n' "$out" | tail -n 1)
job_id=${job_id%%;*}
"""

# "STATE|NODE|REASON|TIME LEFT", then for a pending job its expected start; "GONE" when SLURM no longer knows it.
QUERY = r"""
out=$(squeue -h -j "$1" -o '%T|%N|%r|%L' 2>&1) || {
  case $out in *"Invalid job id"*) echo GONE; exit 0 ;; esac
  printf '%s\n' "$out" >&2; exit 1
}
[ -n "$out" ] || { echo GONE; exit 0; }
printf '%s\n' "$out"
case $out in PENDING*) squeue --start -h -j "$1" -o '%S' 2>/dev/null ;; esac
exit 0
"""

# Cancels job $1: with a signal ($2), sent to every step and the batch script (`--full`; without it
# `scancel --signal` reaches only job steps and leaves the script, our service, running).
CANCEL = r"""
if [ -n "$2" ]; then scancel --full --signal="$2" "$1"; else scancel "$1"; fi 2>/dev/null
exit 0
"""

QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "STOPPED", "SIGNALING"})
# Pending reasons that waiting never clears (squeue's %r): the job asks for what the partition, account or
# QOS does not allow, for nodes or features that do not exist, or was held after failing to launch.
NEVER_CLEARS = frozenset({
    "AccountNotAllowed", "BadConstraints", "DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS",
    "JobHeldAdmin", "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "QOSNotAllowed",
    "ReservationDeleted", "launch failed requeued held",
})
NO_VALUE = ("", "(null)", "N/A", "None", "INVALID", "n/a")


class Slurm(Scheduler):
    name = "slurm"
    job_id_variable = "SLURM_JOB_ID"
    submit = SUBMIT
    never_clears = NEVER_CLEARS

    def query(self, host: Host, job_id: str) -> JobInfo:
        result = host.run_script(QUERY, [job_id])
        if result.returncode != 0:
            raise HostError(f"squeue on {host.name}: {result.stderr.strip() or 'failed'}", host=host.name,
                            step="squeue")
        lines = result.stdout.strip().splitlines()
        if not lines or lines[0] == "GONE":
            return JobInfo(ENDED, "GONE")
        raw_state, node, reason, time_left = ([*lines[0].split("|", 3), "", "", ""])[:4]
        state = QUEUED if raw_state in QUEUED_STATES else RUNNING if raw_state in RUNNING_STATES else ENDED
        estimate = lines[1].strip() if len(lines) > 1 else ""
        return JobInfo(state, raw_state, _value(node), _value(reason) if state == QUEUED else None,
                       _value(time_left), _value(estimate))

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        host.run_script(CANCEL, [job_id, signal or ""])


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in NO_VALUE else text
