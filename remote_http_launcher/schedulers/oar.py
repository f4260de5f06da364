"""OAR: oarsub, oarstat, oardel (parsed on OAR 2.5's documented JSON; no real OAR runs in the tests, see
docs/schedulers.md)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .. import scripts
from ..errors import HostError
from .base import ENDED, QUEUED, RUNNING, JobInfo, Scheduler, clock_seconds, run, timing

if TYPE_CHECKING:
    from ..hosts import Host

NOW = "rhl-now"  # oar_query.sh's line before oarstat's JSON
QUEUED_STATES = frozenset({"Waiting", "Hold", "toLaunch", "Launching", "toAckReservation"})
RUNNING_STATES = frozenset({"Running", "Suspended", "Resuming"})
# The scheduler's summary at the head of a job's message ("R=1,W=0:5:0,J=B (Karma=0.000,quota_ok)"): no reason.
SUMMARY = re.compile(r"^R=\d+,W=[\d:]+,J=\w+(?:,\w=\S+)*\s*(?:\([^)]*\))?\s*")
NEVER_CLEARS = frozenset({"Hold"})  # a hold waits for an oarresume, never for time


class Oar(Scheduler):
    name = "oar"
    job_id_variable = "OAR_JOB_ID"
    restarts_variable = None  # OAR resubmits a job as a new job, under an id of its own
    submit = "oar_submit"
    never_clears = NEVER_CLEARS
    commands = ("oarsub", "oarstat", "oardel")

    def parse(self, output: str, job_id: str) -> JobInfo:
        return parse_query(output, job_id)

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        result = run(host, scripts.program("oar_cancel"), [job_id, signal or ""])
        if result.returncode == scripts.Exit.NO_COMMAND:
            raise HostError(f"oardel on {host.name}: {result.stderr.strip()}", host=host.name, step="oardel")


def parse_query(output: str, job_id: str) -> JobInfo:
    """The job as oar_query.sh's output describes it (`oarstat -f -J`: the job under its id)."""
    lines = output.strip().splitlines()
    if not lines or lines[0] == "GONE":
        return JobInfo(ENDED, "GONE")
    now = lines[0].removeprefix(NOW).strip() if lines[0].startswith(NOW) else ""
    try:
        data = json.loads("\n".join(line for line in lines if not line.startswith(NOW)))
    except ValueError:
        return JobInfo(ENDED, "unreadable")
    job: Any = data.get(job_id) if isinstance(data, dict) else None
    if not isinstance(job, dict):
        return JobInfo(ENDED, "GONE")
    raw_state = str(job.get("state", ""))
    state = QUEUED if raw_state in QUEUED_STATES else RUNNING if raw_state in RUNNING_STATES else ENDED
    nodes = job.get("assigned_network_address") or job.get("assigned_hostnames") or []
    node = str(nodes[0]) if isinstance(nodes, list) and nodes else str(nodes) if isinstance(nodes, str) else None
    if state == QUEUED:
        reason = "Hold" if raw_state == "Hold" else SUMMARY.sub("", str(job.get("message") or "")).strip() or None
        return JobInfo(state, raw_state, node or None, reason, None, _epoch(job.get("scheduledStart")))
    if state == ENDED:
        return JobInfo(state, raw_state, node or None)
    return JobInfo(state, raw_state, node or None, **timing(*_times(job.get("walltime"), job.get("startTime"), now)))


def _epoch(value: Any) -> str | None:
    """A time OAR gives in seconds since the epoch, as ISO 8601 UTC; None for none ("no prediction", 0)."""
    if isinstance(value, int) and value > 0:
        from datetime import datetime, timezone

        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return None


def _times(walltime: Any, start: Any, now: str) -> tuple[int | None, int | None]:
    """The walltime (seconds, or "H:M:S") and what is left of it since the start (seconds)."""
    limit = walltime if isinstance(walltime, int) else clock_seconds(walltime.strip()) \
        if isinstance(walltime, str) else None
    if limit is None or not isinstance(start, int) or start <= 0 or not now.isdigit():
        return limit, None
    return limit, limit - (int(now) - start)
