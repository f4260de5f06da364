"""Grid Engine: qsub, qstat, qdel (tested against Debian 12's Son of Grid Engine 8.1.9, see tests/gridengine.py)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from .. import scripts
from ..errors import HostError
from .base import ENDED, QUEUED, RUNNING, JobInfo, Scheduler, clock_seconds, run, timing

if TYPE_CHECKING:
    from ..hosts import Host

LIST, NOW, QUEUE_LIMIT = "rhl-list", "rhl-now", "rhl-queue-h_rt"  # sge_query.sh's lines before `qstat -j`
TIME_FORMAT = "%m/%d/%Y %H:%M:%S"  # qstat's, and sge_query.sh's `date`
ERROR = "error: "  # the reason of a job in error state (E): it waits until someone clears it (qmod -cj)
# Scheduling messages that waiting never clears: a limit fixed by the queue, host or cluster configuration
# (qf:, hf:, gf: values; "because of cluster queue"), a queue the user may not use, an error state.
NEVER_CLEARS = frozenset({"offers only qf:", "offers only hf:", "offers only gf:", "because of cluster queue",
                          "has no permission for", "has no access to", ERROR})
NO_REASON = ("There are no messages available", "(Collecting of scheduler job information is turned off)")
UNLIMITED = ("INFINITY", "infinity")
UNLISTED = "unlisted"  # the state of a job `qstat -j` knows and qstat's list does not (being started or ended)


class GridEngine(Scheduler):
    name = "sge"
    job_id_variable = "JOB_ID"
    # Grid Engine says only whether the job was restarted (0 or 1), not how often; `query` reports no count.
    restarts_variable = "RESTARTED"
    submit = "sge_submit"
    never_clears = NEVER_CLEARS
    commands = ("qsub", "qstat", "qdel")

    def parse(self, output: str, job_id: str) -> JobInfo:
        return parse_query(output)

    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        """qdel: Grid Engine sends no chosen signal; see sh/sge_cancel.sh for what a job gets instead."""
        result = run(host, scripts.program("sge_cancel"), [job_id, signal or ""])
        if result.returncode == scripts.Exit.NO_COMMAND:
            raise HostError(f"qdel on {host.name}: {result.stderr.strip()}", host=host.name, step="qdel")

    def hopeless(self, info: JobInfo) -> bool:
        return info.state == QUEUED and info.reason is not None and _never_clears(info.reason)


def parse_query(output: str) -> JobInfo:
    """The job as sge_query.sh's output describes it."""
    lines = output.strip().splitlines()
    if not lines or lines[0] == "GONE":
        return JobInfo(ENDED, "GONE")
    fields = {prefix: line.removeprefix(prefix).strip() for line in lines
              for prefix in (LIST, NOW, QUEUE_LIMIT) if line.startswith(prefix)}
    detail = [line for line in lines if not line.startswith((LIST, NOW, QUEUE_LIMIT))]
    columns = fields.get(LIST, "").split()
    raw_state = columns[4] if len(columns) > 4 else ""
    state = _state(raw_state, detail)
    raw_state = raw_state or UNLISTED
    node = (columns[7].partition("@")[2] or None) if len(columns) > 7 else None
    if state != RUNNING:
        return JobInfo(state, raw_state, node, _reason(raw_state, detail) if state == QUEUED else None)
    limit = _resource(detail, "h_rt") or fields.get(QUEUE_LIMIT)
    started = " ".join(columns[5:7])
    if limit in UNLIMITED:
        return JobInfo(state, raw_state, node, None, "UNLIMITED")
    return JobInfo(state, raw_state, node, **timing(*_times(limit, started, fields.get(NOW, ""))))


def _state(raw: str, detail: list[str]) -> str:
    """qstat's letters as a neutral state: E(rror) and q(ueued)/w(aiting) wait; t(ransferring) has a node but
    no job script yet; r(unning) and the suspended s, S, T run; d(eletion) of a job that waits ends it."""
    if not raw:  # known to `qstat -j` but not (yet, or any more) listed: usage means it has run
        return RUNNING if any(line.startswith("usage ") for line in detail) else QUEUED
    if "E" in raw:
        return QUEUED
    if "d" in raw and not any(letter in raw for letter in "rtsST"):
        return ENDED
    if "q" in raw or "w" in raw or "t" in raw:
        return QUEUED
    return RUNNING if any(letter in raw for letter in "rsST") else ENDED


def _reason(raw_state: str, detail: list[str]) -> str | None:
    """Why the job waits: its error (state E), else the scheduler's first message that waiting may clear, else
    its first message (one that never clears). Grid Engine gives messages only with schedd_job_info true."""
    if "E" in raw_state:
        errors = [match.group(1) for line in detail if (match := re.match(r"error reason\s+\d+:\s*(.*)", line))]
        return ERROR + (errors[0] if errors else "the job is in error state")
    messages: list[str] = []
    for line in detail:
        if line.startswith("scheduling info:"):
            messages.append(line.removeprefix("scheduling info:").strip())
        elif messages and line[:1].isspace():
            messages.append(line.strip())
        elif messages:
            break
    messages = [message for message in messages if message and message not in NO_REASON]
    clearing = [message for message in messages if not _never_clears(message)]
    return next(iter(clearing or messages), None)


def _never_clears(reason: str) -> bool:
    return any(marker in reason for marker in NEVER_CLEARS)


def _resource(detail: list[str], name: str) -> str | None:
    """A hard resource request's value (`qstat -j`'s "hard resource_list: h_rt=3600,mem_free=1G")."""
    for line in detail:
        if line.startswith("hard resource_list:"):
            for request in line.partition(":")[2].strip().split(","):
                key, _, value = request.partition("=")
                if key.strip() == name:
                    return value.strip()
    return None


def _times(limit: str | None, started: str, now: str) -> tuple[int | None, int | None]:
    """The job's h_rt and what is left of it (seconds): h_rt less the time since it started."""
    seconds = clock_seconds(limit) if limit else None
    try:
        elapsed = (datetime.strptime(now, TIME_FORMAT) - datetime.strptime(started, TIME_FORMAT)).total_seconds()
    except ValueError:
        return seconds, None
    return seconds, None if seconds is None else seconds - int(elapsed)
