"""One service on its host: where its files are, what its record says, and safe signals.

A service is a config's key on a `Host`. Its record is the server status file;
its process is signalled only when it is verifiably the one that was launched
(PID and start time), never a reused PID.
"""

from __future__ import annotations

import time

from . import scripts, statefiles
from .processes import UNIDENTIFIED
from .records import NamedTuple
from .statefiles import ServerState

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .hosts import Host
    from .hosts.base import SeenProcess
    from .schedulers import Job

STOP_TIMEOUT = 10.0
SETTLE_TIME = 1.0  # seconds an unparsable status file is re-read before it counts as corrupt
SETTLE_POLL = 0.02
LEGACY_START_SLACK = 2.0  # seconds: start times from /proc are whole seconds here, and clocks step
KILL_WAIT = 5.0
ERROR_LOG_LINES = 10  # the log's last lines an error shows
ERROR_LOG_WIDTH = 200  # characters of each
WILDCARD_SERVER_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
SUCCESSOR_SUFFIX = ".next"  # the files of a key's successor job, until the hand-over
SUCCESSOR_OF = "successor_of"  # a successor job's record: the id of the job it renews


class Service(NamedTuple):
    """One service (a config's key) on one host: where its files are.

    `successor`: the key's next batch job while the current one still runs (walltime renewal, see
    tunnels/renew.py). Its record, job script and launch lock are files of their own, named after the key's
    with SUCCESSOR_SUFFIX (never taken for a key's record by `list`), until the hand-over renames them
    over the key's; the log is shared."""

    host: Host
    config: Config
    key: str
    successor: bool = False

    @property
    def status_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.json{self._suffix}"

    @property
    def _suffix(self) -> str:
        return SUCCESSOR_SUFFIX if self.successor else ""

    def next_run(self) -> Service:
        """The key's successor job (see `successor`)."""
        return self._replace(successor=True)

    @property
    def log_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.log"

    @property
    def lock_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.lock{self._suffix}"

    @property
    def job_file(self) -> str:
        """A batch job's script, as submitted (schedulers/base.py)."""
        return f"{self.host.state_dir}/{self.key}.job{self._suffix}"

    def read_status(self) -> bytes | None:
        return self.read_status_seen()[0]

    def read_state(self) -> ServerState | None:
        return self.read_state_seen()[0]

    def read_status_seen(self) -> tuple[bytes | None, SeenProcess | None]:
        """The status file's bytes, with its PID's start time when the host looked it up in the same step
        (Host.read_status_file; for `identity_problem` right after). One that is not a JSON object is read
        again for up to SETTLE_TIME: a service rewriting it in place (no temp file and rename) shows half a
        file for a moment, and taking that for a stale record would launch a second copy or leave the
        service out of `stop`'s reach."""
        raw, seen = self.host.read_status_file(f"{self.key}.json{self._suffix}")
        deadline = time.monotonic() + SETTLE_TIME
        while half_written(raw) and time.monotonic() < deadline:
            time.sleep(max(self.host.poll_interval, SETTLE_POLL))
            raw, seen = self.host.read(self.status_file), None
        return raw, seen

    def read_state_seen(self) -> tuple[ServerState | None, SeenProcess | None]:
        raw, seen = self.read_status_seen()
        return ServerState.parse(statefiles.decode(raw)), seen

    def recalled_state(self) -> ServerState | None:
        """The record as the host last read it for anyone (Host.recall_status_file): a guess, never a fact."""
        raw = self.host.recall_status_file(f"{self.key}.json{self._suffix}")
        return None if raw is None else ServerState.parse(statefiles.decode(raw))

    def stop_unrecorded(self, timeout: float = STOP_TIMEOUT) -> list[tuple[int, str]]:
        """Stop the processes a launch of this key started that its status file does not (or no longer)
        name: found by the marker in their environment (key_processes.sh), so a status file that is
        garbage, a symlink or gone leaves nothing out of reach. (leader PID, last signal) of each group.

        A group is signalled whole only when its leader carries the marker; any other process alone
        (its group may be the one of whoever launched it, when there was no `setsid`).
        """
        processes = self.key_processes()
        targets = sorted({group if group in processes else pid for pid, group in processes.items()})
        if not targets:
            return []
        for target in targets:
            self.host.signal_group(target, "TERM")
        if wait_gone(lambda: bool(self.key_processes()), timeout, self.host.poll_interval):
            return [(target, "TERM") for target in targets]
        for pid, group in self.key_processes().items():
            self.host.signal_group(group if group in processes else pid, "KILL")
        wait_gone(lambda: bool(self.key_processes()), KILL_WAIT, self.host.poll_interval)
        return [(target, "KILL") for target in targets]

    def key_processes(self) -> dict[int, int]:
        """{PID: process group} of the live processes a launch of this key started (key_processes.sh)."""
        out = self.host.run_script(scripts.program("key_processes"), [self.status_file]).stdout
        return {int(words[0]): int(words[1]) for words in map(str.split, out.splitlines())
                if len(words) == 2 and words[0].isdigit() and words[1].isdigit()}

    def identity_problem(self, state: ServerState, seen: SeenProcess | None = None) -> str | None:
        return identity_problem(self.host, state, self.status_file, seen)

    def is_ours(self, state: ServerState, seen: SeenProcess | None = None) -> bool:
        return is_ours(self.host, state, self.status_file, seen)

    def terminate(self, state: ServerState, timeout: float = STOP_TIMEOUT) -> str | None:
        return terminate(self.host, state, timeout, self.status_file)

    def node(self, state: ServerState) -> str | None:
        """The compute node a batch job's service runs on (as the job recorded it); None for a process."""
        node = state.data.get("node")
        return node if isinstance(node, str) and node and job_of(state) else None

    def server_interface(self, state: ServerState) -> str:
        """The address the service listens on, as seen from its host (a wildcard becomes loopback;
        a batch job's service is reached at its node from the login node)."""
        node = self.node(state)
        if node is not None:
            return node
        interface = state.data.get("network_interface")
        if not isinstance(interface, str) or not interface:
            interface = self.config.network_interface
        return WILDCARD_SERVER_HOSTS.get(interface, interface)

    def log_tail(self, state: ServerState | None = None) -> list[str]:
        """The last non-empty lines of the service's log (at most ERROR_LOG_LINES, each cut to
        ERROR_LOG_WIDTH characters), for error messages; one line saying so when it is empty."""
        path = state.log if state and state.log else self.log_file
        lines = [line.strip() for line in self.host.tail(path).splitlines() if line.strip()][-ERROR_LOG_LINES:]
        return [line if len(line) <= ERROR_LOG_WIDTH else f"{line[:ERROR_LOG_WIDTH - 3]}..."
                for line in lines] or ["(log is empty)"]


def half_written(raw: bytes | None) -> bool:
    """A status file that is there but not a JSON object, and not too large to be one being written."""
    return raw is not None and not statefiles.too_large(raw) and statefiles.decode(raw) is None


def is_ours(host: Host, state: ServerState, status_file: str | None = None, seen: SeenProcess | None = None) -> bool:
    """True when state's process is still the one that was launched (see `identity_problem`)."""
    return identity_problem(host, state, status_file, seen) is None


def identity_problem(host: Host, state: ServerState, status_file: str | None = None,
                     seen: SeenProcess | None = None) -> str | None:
    """None when state's process is alive and is still the one that was launched; else why not.

    With our start time recorded, the PID must have that start time, or, its
    leader gone, its process group must still run: a compound command's service
    outlives a killed `sh` wrapper, and a group ID is not reused while the group
    has members. A record without it (the original's) is trusted only when
    the process's command line holds the recorded `command` and the process is
    not younger than the file `status_file` (its start may trail the file's write
    by LEGACY_START_SLACK): a PID reused by another program of the same user
    fails one or the other. Without `status_file` (a liveness check that signals
    nothing), the command line alone decides. A batch job is the service's
    while its scheduler has it queued or running. `seen`: the start time the
    host looked up with the status file `state` was parsed from
    (Service.read_status_seen), used only when it is of the same PID.
    """
    job = job_of(state)
    if job is not None:
        from .schedulers import ENDED

        return f"job {job.id} has ended" if job.query(host).state == ENDED else None
    if state.pid is None:
        return "the status file names no process"
    current = seen.start_time if seen is not None and seen.pid == state.pid else host.process_start_time(state.pid)
    if current is None:
        group_alive = scripts.program("group_alive")
        if state.start_time is not None and host.run_script(group_alive, [str(state.pid)]).returncode == 0:
            return None
        return f"process {state.pid} is gone"
    if current == UNIDENTIFIED:
        return None  # a host that tells only that the PID lives (rhl-guard's helpers), which the original trusts
    if state.start_time is not None:
        return None if state.start_time == current else f"PID {state.pid} now belongs to another process"
    return _legacy_problem(host, state, status_file)


def _legacy_problem(host: Host, state: ServerState, status_file: str | None) -> str | None:
    """Why a record without a start time may not be trusted with its live PID (None: it may).

    The process must run the recorded command as its shell ran it (shellwords: `~` and variables expanded,
    quotes removed, a wrapper's or conda prefix's script), or carry the status file among its arguments
    (every command of the original's users does, through `{status_file}`), or, failing both, its process
    group must listen on the recorded port (a service that rewrote its own command line). With
    `status_file`, the process must also not be younger than that file.
    """
    from . import shellwords

    command = state.data.get("command")
    names = shellwords.variables(command) if isinstance(command, str) else []
    result = host.run_script(scripts.program("process_origin"), [str(state.pid), *names])
    if result.returncode != 0:
        return f"process {state.pid} is gone"
    started, kind, *rest = [*result.stdout.split("\n"), ""]
    values, process = rest[:len(names)], "\n".join(rest[len(names):]).rstrip("\n")
    env = {name: value[1:] for name, value in zip(names, values) if value.startswith("+")}  # noqa: B905
    if not (isinstance(command, str) and _runs(kind, process, command, host.home, env, status_file)) \
            and not _serves_recorded_port(host, state):
        return f"PID {state.pid} now belongs to another process (it does not run the recorded command)"
    if status_file is None:
        return None  # a liveness check only (the keeper's watchdog, which signals nothing)
    mtime = host.mtime(status_file)
    if mtime is None or not started.strip().isdigit():
        return f"cannot tell whether PID {state.pid} is still the service (its status file records no start time)"
    if int(started) > mtime + LEGACY_START_SLACK:
        return (f"PID {state.pid} now belongs to another process (it started after the status file was "
                "written)")
    return None


def _runs(kind: str, process: str, command: str, home: str, env: dict[str, str], status_file: str | None) -> bool:
    """True when the process (its arguments one a line, or `ps`'s text without /proc) runs `command`."""
    from . import shellwords

    if kind == "argv":
        argv = process.split("\n")
        return shellwords.runs(argv, command, home, env) or (status_file is not None and any(
            arg == status_file or arg.endswith(f"={status_file}") for arg in argv))
    # `ps` joins the arguments with spaces: the last program's words must stand in it in order.
    commands = shellwords.simple_commands(command, home, env)
    wanted = [word.literal for word in commands[-1]] if commands else []
    if not wanted or None in wanted:
        return False
    return f" {' '.join(' '.join(map(str, wanted)).split())} " in f" {' '.join(process.split())} "


def _serves_recorded_port(host: Host, state: ServerState) -> bool:
    """The recorded process's group listens on the port its record reports (a host that cannot tell: no)."""
    return state.pid is not None and isinstance(state.port, int) and host.listens(state.pid, state.port) is True


def terminate(host: Host, state: ServerState, timeout: float = STOP_TIMEOUT,
              status_file: str | None = None) -> str | None:
    """Stop the process group of a service that is verifiably ours: SIGTERM, wait, SIGKILL.

    Returns the last signal needed ("TERM" or "KILL"), or None when the
    process was not ours (gone, or its PID reused): then nothing is signalled.
    A batch job gets the same through its scheduler; one still queued is
    cancelled ("CANCEL").
    """
    job = job_of(state)
    if job is not None:
        return _cancel_job(host, job, timeout)
    if not is_ours(host, state, status_file):
        return None
    assert state.pid is not None
    pid = state.pid
    host.signal_group(pid, "TERM")

    def group_alive() -> bool:
        return host.process_start_time(pid) is not None or \
            host.run_script(scripts.program("group_alive"), [str(pid)]).returncode == 0

    if wait_gone(group_alive, timeout, host.poll_interval):
        return "TERM"
    if is_ours(host, state, status_file):
        host.signal_group(pid, "KILL")
    else:
        # The leader is gone, so its group can only hold its own children: no PID reuse possible.
        host.run_script(scripts.program("kill_group"), [str(pid)])
    wait_gone(group_alive, KILL_WAIT, host.poll_interval)
    return "KILL"


def ended(state: ServerState) -> str:
    """How a watchdog says the service is gone: its batch job ended, or its process exited."""
    job = job_of(state)
    return f"job {job.id} has ended" if job is not None else f"service process {state.pid} has exited"


def job_of(state: ServerState | None) -> Job | None:
    """The batch job a record names (schedulers.job_of); a process's record needs no scheduler module,
    which keeps them off the warm path and the commands' start-up."""
    if state is None or "job_id" not in state.data:
        return None
    from . import schedulers

    return schedulers.job_of(state)


def _cancel_job(host: Host, job: Job, timeout: float) -> str | None:
    from .schedulers import ENDED, QUEUED

    info = job.query(host)
    if info.state == ENDED:
        return None
    if info.state == QUEUED:
        job.cancel(host)
        return "CANCEL"

    def alive() -> bool:
        return job.query(host).state != ENDED

    job.cancel(host, "TERM")
    if wait_gone(alive, timeout, host.poll_interval):
        return "TERM"
    job.cancel(host)
    wait_gone(alive, KILL_WAIT, host.poll_interval)
    return "KILL"


def wait_gone(alive: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll until `alive()` is false; False if it still is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
