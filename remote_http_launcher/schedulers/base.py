"""The scheduler interface: submit a job script, query a job, cancel it; and the job script itself.

A scheduler is used only through `Host.run_script`, so a job is submitted
and watched the same way on this machine and over SSH (one round trip each).
The job script is POSIX sh with every value shell-quoted: it enters the
workdir, records its node and job id in the status file (via the same
program a detached service runs, sh/service.sh: conda activation, umask)
and `exec`s the service, so the job's process is the service and
cancelling the job ends it; a service that forked away would escape its job
or be killed with it, depending on the cluster's process tracking.
"""

from __future__ import annotations

import logging
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import scripts
from ..errors import ConfigError, HostError

if TYPE_CHECKING:
    from ..hosts import Host
    from ..hosts.base import ScriptResult

log = logging.getLogger("remote_http_launcher.schedulers")

# Neutral job states: what the launcher acts on.
QUEUED, RUNNING, ENDED = "queued", "running", "ended"


class JobInfo(NamedTuple):
    """What the scheduler says about a job; `state` is QUEUED, RUNNING or ENDED, `raw_state` its own word."""

    state: str
    raw_state: str
    node: str | None = None
    reason: str | None = None  # why it is pending
    time_left: str | None = None  # as the scheduler prints it, e.g. 7:59:12
    start_estimate: str | None = None  # the scheduler's expected start time, when it has one
    restarts: int | None = None  # how often the job was requeued (each restart a new run); None: not known
    seconds_left: float | None = None  # until its walltime ends; None: no limit, or not known
    walltime: float | None = None  # its time limit in seconds; None: no limit, or not known


class Scheduler(ABC):
    """One batch system: its commands as sh text, and how to read their answers."""

    name: str
    #: The environment variable holding the job's id inside the job.
    job_id_variable: str
    #: Another one, read where the first is not set (a scheduler's commands wrapping another's).
    job_id_fallback: str | None = None
    #: The environment variable holding, inside the job, how often it was restarted (unset on its first run);
    #: None where the scheduler tells a job no such count (its every run records 0), or a restarted job is a
    #: new job (its own id).
    restarts_variable: str | None
    #: The library (sh/NAME.sh) defining `rhl_submit` for submit.sh (its inputs: see slurm_submit.sh).
    submit: scripts.Name
    #: Pending reasons that can never clear by waiting: `up` gives up at once.
    never_clears: frozenset[str]
    #: The programs it runs on the login node (submit, query, cancel): `check` looks for them there.
    commands: tuple[str, ...]

    def query(self, host: Host, job_id: str) -> JobInfo:
        """The job's state (ENDED when the scheduler no longer knows it): what sh/NAME_query.sh prints, read by
        `parse`; its failure names the query command (commands[1])."""
        result = run(host, scripts.program(f"{self.name}_query"), [job_id])
        if result.returncode != 0:
            command = self.commands[1]
            raise HostError(f"{command} on {host.name}: {result.stderr.strip() or 'failed'}", host=host.name,
                            step=command)
        return self.parse(result.stdout, job_id)

    @abstractmethod
    def parse(self, output: str, job_id: str) -> JobInfo:
        """The job as the query program's output describes it."""

    @abstractmethod
    def cancel(self, host: Host, job_id: str, signal: str | None = None) -> None:
        """Send `signal` (e.g. TERM) to the job's processes, its script included; None cancels it outright."""

    def walltime(self, options: Sequence[str]) -> float | None:
        """The time limit (seconds) the submit `options` ask for; None when they set none (the queue's
        default applies, which only the running job's JobInfo.walltime tells)."""
        return None

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


def run(host: Host, program: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
    """`host.run_script` of a program running the scheduler's commands: which ones it used (found on PATH
    or on the login shell's: rhl_use) goes to the debug log, and out of its stderr."""
    result = host.run_script(program, args, stdin)
    lines = result.stderr.splitlines(keepends=True)
    for line in lines:
        if line.startswith(scripts.USING):
            log.debug("%s on %s", line.strip(), host.name)
    return result._replace(stderr="".join(line for line in lines if not line.startswith(scripts.USING)))


def check_renewal(scheduler: Scheduler, options: Sequence[str], renew_before: float | None) -> None:
    """ConfigError unless `renew_before` is shorter than the walltime the submit options ask for (when they
    name one): a successor would be due as soon as it started, and so on."""
    walltime = scheduler.walltime(options)
    if renew_before is not None and walltime is not None and renew_before >= walltime:
        raise ConfigError(f"scheduler.renew_before: {renew_before:g} s is not less than the job's walltime "
                          f"({walltime:g} s from scheduler.options); lower it, or ask for a longer walltime")


def clock_seconds(text: str) -> int | None:
    """A duration as batch systems write one: seconds, or [[H:]M:]S."""
    if not text.isascii() or not all(part.isdigit() for part in text.split(":")) or text.count(":") > 2:
        return None
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return total


def time_left_text(seconds: int) -> str:
    """Seconds as squeue prints time left ([D-]H:MM:SS), so every scheduler's `status` reads alike."""
    days, rest = divmod(max(0, seconds), 86400)
    minutes = f"{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{rest // 3600:02d}:{minutes}" if days else f"{rest // 3600}:{minutes}"


def timing(limit: int | None, left: int | None) -> dict[str, Any]:
    """JobInfo's time fields from a running job's walltime and what is left of it, in seconds (None: no limit,
    or not known): the text `status` shows (as squeue prints it) and the seconds walltime renewal counts."""
    return {"time_left": None if left is None else time_left_text(left),
            "seconds_left": None if left is None else float(max(left, 0)),
            "walltime": None if limit is None else float(limit)}


def recorded_run(data: Mapping[str, Any]) -> int:
    """Which run of its job a status record is of: the job's restart count when its script wrote it (0 for
    the first run, and for records that do not say)."""
    restarts = data.get("restarts")
    return restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0


def moved(info: JobInfo, data: Mapping[str, Any]) -> bool:
    """The job was restarted (requeued) since the record was written: the record's node and port are of a run
    that is gone; the job's new run writes a new record once it starts."""
    return info.restarts is not None and info.restarts != recorded_run(data)


def record_head(scheduler: Scheduler, record: Mapping[str, Any]) -> bytes:
    """The status record's head (scripts.record_head: one line, for sh to append the job's own fields)."""
    return scripts.record_head({**record, "scheduler": scheduler.name})


def job_script(scheduler: Scheduler, *, workdir: str, status_file: str, record: Mapping[str, Any],
               command: str, conda: str | None, ports: str = "", setup: Sequence[str] = ()) -> str:
    """The job script: sh/job.sh after a line giving it its arguments, every value shell-quoted (the
    submission passes conda.sh's path and the umask as $1 and $2: submit.sh). `ports`: scripts.ports_spec,
    chosen on the compute node by the service program; `setup`: lines it runs there first."""
    head = record_head(scheduler, record).decode().rstrip("\n")
    first, exec_text = scripts.exec_plan(command) or ("", "")
    values = shlex.join([workdir, status_file, command, conda or "", first, exec_text, head])
    job_id = f"${{{scheduler.job_id_fallback}-}}" if scheduler.job_id_fallback else ""
    job_id = f"${{{scheduler.job_id_variable}:-{job_id}}}" if job_id else f"${{{scheduler.job_id_variable}-}}"
    restarts = f"${{{scheduler.restarts_variable}-0}}" if scheduler.restarts_variable else "0"
    return "\n".join([
        "#!/bin/sh",
        "# remote-http-launcher: the service's batch job",
        f'set -- "$1" "$2" {values} "{job_id}" {shlex.quote(scripts.program("service"))} '
        f'"{restarts}" {shlex.quote(ports)} {shlex.quote(scripts.setup_arg(setup))}',
        scripts.program("job"),
    ])


def submit_program(scheduler: Scheduler) -> str:
    """The submission's program: sh/submit.sh with the scheduler's `rhl_submit` (args: submit_args)."""
    return scripts.program("prepare", scheduler.submit, "submit")


def submit_input(scheduler: Scheduler, record: Mapping[str, Any], job: str) -> bytes:
    """submit.sh's stdin: the record's head (the status record minus the job's id) on one line, then the job
    script; both hold the record (token, parameters, meta), which arguments would show to every user's `ps`."""
    return record_head(scheduler, record) + job.encode()


def submit_args(*, workdir: str, log: str, status_file: str, job_file: str, conda: str | None, name: str,
                lock: str, lock_token: str, options: Sequence[str]) -> list[str]:
    """Positional arguments of submit.sh (its stdin: submit_input)."""
    return [workdir, log, status_file, conda or "", job_file, name, lock, lock_token, *options]
