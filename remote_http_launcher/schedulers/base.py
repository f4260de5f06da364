"""The scheduler interface: submit a job script, query a job, cancel it; and the job script itself.

A scheduler is used only through `Host.run_script`, so a job is submitted
and watched the same way on this machine and over SSH (one round trip each).
The job script is POSIX sh with every value shell-quoted: it enters the
workdir, records its node and job id in the status file (via the same
prelude a detached service runs, scripts.SERVICE_PRELUDE: conda activation,
umask) and `exec`s the service, so the job's process is the service and
cancelling the job ends it; a service that forked away would escape its job
or be killed with it, depending on the cluster's process tracking.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import scripts

if TYPE_CHECKING:
    from ..hosts import Host

# Neutral job states: what the launcher acts on.
QUEUED, RUNNING, ENDED = "queued", "running", "ended"
EXIT_SUBMIT = scripts.EXIT_SUBMIT

# Runs on the login node: prepare as a launch does (scripts.PREPARE), write the job script beside the status
# file, submit it (the scheduler's `submit` text sets $job_id or exits EXIT_SUBMIT with the scheduler's message),
# then record the queued job in the status file unless the job already wrote its own record (`ln` does not
# replace), and release the launch lock: from here on, the record tells other runs what to wait for.
SUBMIT = r"""
set -u
wd=$1 log=$2 status=$3 conda_env=$4 jobfile=$5 name=$6 lock=$7 lock_token=$8 submit=$9
shift 9  # the rest: the config's submit options
IFS= read -r head || { echo "no status record on stdin" >&2; exit 1; }  # one line: submit_input
job=$(cat)  # the rest of stdin
""" + scripts.PREPARE + r"""
printf '%s\n' "$job" > "$jobfile" || { echo "cannot write the job script $jobfile" >&2; exit 14; }
job_id=
eval "$submit"
case $job_id in
  ''|*[!A-Za-z0-9_.+-]*) echo "the scheduler's answer names no job: $job_id" >&2; exit 15 ;;
esac
printf '%s"job_id": "%s"}\n' "$head" "$job_id" > "$status.$$.tmp" \
  && { ln -- "$status.$$.tmp" "$status" 2>/dev/null; rm -f -- "$status.$$.tmp"; }
if [ -n "$lock" ]; then
  held=
  IFS= read -r held 2>/dev/null < "$lock"
  case $held in *"$lock_token"*) rm -f -- "$lock" ;; esac
fi
echo "$job_id"
"""


class JobInfo(NamedTuple):
    """What the scheduler says about a job; `state` is QUEUED, RUNNING or ENDED, `raw_state` its own word."""

    state: str
    raw_state: str
    node: str | None = None
    reason: str | None = None  # why it is pending
    time_left: str | None = None  # as the scheduler prints it, e.g. 7:59:12
    start_estimate: str | None = None  # the scheduler's expected start time, when it has one


class Scheduler(ABC):
    """One batch system: its commands as sh text, and how to read their answers."""

    name: str
    #: The environment variable holding the job's id inside the job.
    job_id_variable: str
    #: sh text for SUBMIT: submit "$jobfile" with the options "$@", its output to "$log", named "$name", in "$wd";
    #: pass "$conda_sh" "$user_umask" as the job script's arguments; set $job_id, or exit EXIT_SUBMIT.
    submit: str
    #: Pending reasons that can never clear by waiting: `up` gives up at once.
    never_clears: frozenset[str]

    @abstractmethod
    def query(self, host: Host, job_id: str) -> JobInfo:
        """The job's state (ENDED when the scheduler no longer knows it)."""

    @abstractmethod
    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        """Send `signal` (e.g. TERM) to the job's processes, its script included; None cancels it outright."""

    def hopeless(self, info: JobInfo) -> bool:
        """True when the job waits for something that will not happen (a bad partition, account, QOS, ...)."""
        return info.state == QUEUED and info.reason is not None and any(
            info.reason.startswith(reason) for reason in self.never_clears)


class Job(NamedTuple):
    """A job of a scheduler, as a status file records it."""

    scheduler: Scheduler
    id: str

    def query(self, host: Host) -> JobInfo:
        return self.scheduler.query(host, self.id)

    def cancel(self, host: Host, signal: str | None = None) -> None:
        self.scheduler.cancel(host, self.id, signal)


def record_head(scheduler: Scheduler, record: Mapping[str, Any]) -> bytes:
    """The status record's head (scripts.record_head: one line, for sh to append the job's own fields)."""
    return scripts.record_head({**record, "scheduler": scheduler.name})


def job_script(scheduler: Scheduler, *, workdir: str, status_file: str, record: Mapping[str, Any],
               command: str, conda: str | None) -> str:
    """The job script: every value is shell-quoted; its arguments are conda.sh's path and the umask."""
    head = record_head(scheduler, record).decode().rstrip("\n")
    first, exec_text = scripts.exec_plan(command) or ("", "")
    quote = shlex.quote
    conda_env = conda or ""
    return "\n".join([
        "#!/bin/sh",
        "# remote-http-launcher: the service's batch job",
        f"cd -- {quote(workdir)} || exit {scripts.EXIT_WORKDIR}",
        "rhl_node=$(hostname)",
        f"rhl_head={quote(head)}\"\\\"job_id\\\": \\\"${{{scheduler.job_id_variable}}}\\\", "
        "\\\"node\\\": \\\"$rhl_node\\\", \"",
        # The prelude reads the record's head on stdin (scripts.SERVICE_PRELUDE), here as in LAUNCH.
        f"exec sh -c {quote(scripts.SERVICE_PRELUDE)} rhl-service {quote(status_file)} {quote(command)} \"$1\" "
        f"{quote(conda_env)} \"$2\" '' '' {quote(first)} {quote(exec_text)} <<RHL_RECORD",
        "$rhl_head",
        "RHL_RECORD",
        "",
    ])


def submit_input(scheduler: Scheduler, record: Mapping[str, Any], job: str) -> bytes:
    """SUBMIT's stdin: the record's head (the status record minus the job's id) on one line, then the job
    script; both hold the record (token, parameters, meta), which arguments would show to every user's `ps`."""
    return record_head(scheduler, record) + job.encode()


def submit_args(scheduler: Scheduler, *, workdir: str, log: str, status_file: str, job_file: str, conda: str | None,
                name: str, lock: str, lock_token: str, options: Sequence[str]) -> list[str]:
    """Positional arguments of SUBMIT (its stdin: submit_input)."""
    return [workdir, log, status_file, conda or "", job_file, name, lock, lock_token, scheduler.submit, *options]
