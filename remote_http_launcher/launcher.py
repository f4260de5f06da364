"""The launcher's state machine: find the service if it runs, start it if not.

It follows the original's numbered sequence:
  1. the client connection file (possibility A: reuse it; B: go on) — done
     before this module is even imported, by `clientfile.reuse` (the warm path);
  2. the server status file: running (verify), starting (monitor), absent,
     failed or stale (launch; at most one relaunch);
  3. launch detached, under a per-key lock so concurrent runs start it once;
  4. open the client's way in (direct, or a tunnel);
  5. write the client connection file.
It never knows whether its `Host` is this machine or an SSH server, nor who
keeps a tunnel: the caller (the API, or the tunnel keeper process) passes the
host and, for a tunnel, the function that opens it.
"""

from __future__ import annotations

import os
import time

from . import handshake, scripts, statefiles, stock
from ._version import __version__
from .background import Background
from .config import Config, evaluate_command, is_loopback
from .errors import ConfigError, HandshakeError, Interrupted, LauncherError, LaunchError, ServiceFailedError
from .hosts.base import Launch, launch_answer
from .locks import FileLock
from .progress import Progress
from .service import SUCCESSOR_OF, Service, half_written, job_of
from .statefiles import ClientPayload, PathArg, ServerState

TYPE_CHECKING = False  # not typing's: a first launch here imports no typing (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from . import schedulers
    from .hosts import Host
    from .hosts.base import SeenProcess

    T = TypeVar("T")
    E = TypeVar("E", bound=LauncherError)
    TunnelOpener = Callable[[Service, ServerState], dict[str, Any]]
    WayIn = tuple[dict[str, Any], str | None]  # the client payload, and the problem with its first handshake
MAX_LAUNCHES = 2  # the first launch and at most one relaunch
VERIFY_TIMEOUT = 5.0
FIRST_POLL = 0.01  # seconds before the first re-read of a starting service's status file (then doubling)
PROCESS_CHECK_INTERVAL = 0.3
JOB_QUERY_MAX_INTERVAL = 5.0  # a long queue wait asks the scheduler this often: its controller serves everyone
LOCK_GRACE = 10.0
UNPARSABLE_WAIT = 5.0  # seconds a running service may take to make its unparsable status file whole again
WARNING_PREFIX = "warning: "  # a host program's line the user should see even when it succeeds
WILDCARD_CLIENT_HOSTS = {"0.0.0.0": "localhost", "::": "localhost"}
LAUNCH_STEPS: dict[int, str] = {
    scripts.Exit.WORKDIR: "workdir", scripts.Exit.LOG: "log file", scripts.Exit.NO_CONDA: "conda",
    scripts.Exit.NO_CONDA_ENV: "conda", scripts.Exit.STATE_DIR: "state directory", scripts.Exit.SUBMIT: "submit",
    scripts.Exit.NO_COMMAND: "scheduler"}


class Launcher:
    """Steps 2-5 of one run for one config, on a host the caller connected."""

    def __init__(self, config: Config, key: str, client_path: PathArg, progress: Progress | None = None) -> None:
        self.config = config
        self.key = key
        self.client_path = client_path
        self.progress = progress or Progress.silent()
        self._early_way_in: tuple[ServerState, Background[WayIn]] | None = None  # step 4, started early
        self._watched: ServerState | None = None  # the service this run started or waits for (for Ctrl-C)
        self._launch_read: bytes | None = None  # the status file as the last launch script printed it
        self._launching = False  # a launch script runs (it waits for the service's record: see _left_behind)

    def serve(self, host: Host, open_tunnel: TunnelOpener | None = None) -> tuple[ClientPayload, ServerState]:
        """Steps 2-5 on a connected host; `open_tunnel` (the keeper's) makes the client's way in."""
        service = Service(host, self.config, self.key)
        try:
            state = self._ensure_running(service, open_tunnel)
        except KeyboardInterrupt:
            raise Interrupted(self._left_behind(service)) from None
        self.progress.phase("connecting client")
        payload = self._client_payload(service, state, open_tunnel)
        if self.config.stock_ports or self.config.url_pattern:
            url = state.data.get(stock.URL)
            if not isinstance(url, str) and self.config.url_pattern and stock.chosen_ports(state) is None:
                url = stock.scan_log_url(service, state)  # a service that reports itself: its log, once
            payload["url"] = stock.client_url(dict(payload), state, url if isinstance(url, str) else None)
        statefiles.write_atomic(self.client_path, statefiles.encode(payload))
        return payload, state

    def _error(self, kind: type[E], service: Service, step: str, detail: str, state: ServerState | None = None,
               *, with_log: bool = False, stop: Callable[[], object] | None = None) -> E:
        """`KEY: DETAIL`, with the key, host, step and (`with_log`) the log's tail as fields too.

        `stop` ends what the failed launch leaves behind, first. It and the log's
        tail go over the same host, which may be what failed (a link gone
        silent): their own failure is added to the message, never raised in
        place of the error that explains the run.
        """
        notes = []
        if stop is not None:
            try:
                stop()
            except LauncherError as exc:
                notes.append(f"could not stop it: {exc}")
        tail = None
        if with_log:
            try:
                tail = service.log_tail(state)
            except LauncherError as exc:
                notes.append(f"could not read its log: {exc}")
        setup = scripts.setup_failure(tail, service.host.name) if tail is not None else None
        if setup is not None:  # what ended the service: named first
            detail, step = f"{setup}; {detail}", "setup"
        if tail is None:
            message = "; ".join([f"{self.key}: {detail}", *notes])
        elif len(tail) == 1:
            message = "; ".join([f"{self.key}: {detail}", f"log: {tail[0]}", *notes])
        else:  # the lines as lines, after the one line that says what failed
            message = "; ".join([f"{self.key}: {detail}", *notes, f"last {len(tail)} lines of its log:"])
            message += "".join(f"\n  {line}" for line in tail)
        return kind(message, key=self.key, host=service.host.name, step=step,
                    log_tail=None if tail is None else "\n".join(tail))

    # 2. The server status file.
    def _ensure_running(self, service: Service, open_tunnel: TunnelOpener | None = None) -> ServerState:
        launches = 0
        self._guess_way_in(service, open_tunnel)
        while True:
            state, process = service.read_state_seen()
            if state is not None and state.status == "starting" and service.is_ours(state, process):
                self.progress.phase("waiting for the service to start")
                LaunchLock(service).is_free_or_stale()  # breaks the lock of a launcher that died before releasing it
                state, process = self._monitor(service, state, launched=False), None
            if state is not None and state.status == "running":
                problem = self._verify(service, state, open_tunnel, process)
                if problem is None:
                    if state.start_time is None:
                        self.progress.phase(f"reusing process {state.pid}, which another launcher (the original "
                                            "remote-http-launcher) started")
                    return state
                self.progress.phase(f"stale service ({problem})")  # stopped below only if verifiably ours
                service.terminate(state)
            if launches >= MAX_LAUNCHES:
                raise self._error(LaunchError, service, "launch", f"service on {service.host.name} did not stay up "
                                  f"after {launches} launches; run 'remote-http-launcher logs CONFIG' to see why")
            launches += 1
            try:
                state = self._launch_once(service, state)
            except ServiceFailedError as exc:
                # A stock server's port may have been taken between its choice and the bind: another port.
                if not self.config.stock_ports or launches >= MAX_LAUNCHES or exc.step != "start":
                    raise
                self.progress.phase(f"{exc}; relaunching on another port")
                state = None
                continue
            if state.status == "running":
                problem = self._verify(service, state, open_tunnel)
                if problem is None:
                    return state
                raise self._error(HandshakeError, service, "handshake", f"service on {service.host.name} reported "
                                  f"port {state.port} but {problem}", state, with_log=True,
                                  stop=_later(service.terminate, state))

    def _guess_way_in(self, service: Service, open_tunnel: TunnelOpener | None) -> None:
        """Step 4 for the record the host remembers from an earlier read (a connection broker does, from any
        command's), started before the status file is read again: this machine's handshake then runs beside
        that read instead of a round trip after it. It counts only for a fresh record with the same
        contents (`_way_in_for`). Direct connections only: no tunnel is opened on a guess."""
        if not self.config.remote or open_tunnel is not None:
            return
        guess = service.recalled_state()
        if guess is not None and guess.status == "running" and guess.port is not None and job_of(guess) is None:
            self._early_way_in = (guess, Background(lambda: self._open_way_in(service, guess, open_tunnel)))

    def _way_in_for(self, state: ServerState) -> Background[WayIn] | None:
        """Step 4 as started early for a record with the contents of `state` (`_verify`, `_guess_way_in`)."""
        if self._early_way_in is None or self._early_way_in[0].data != state.data:
            return None
        return self._early_way_in[1]

    def _verify(self, service: Service, state: ServerState, open_tunnel: TunnelOpener | None = None,
                process: SeenProcess | None = None) -> str | None:
        """Scenario 1: the recorded process is ours and alive, and it answers on its port.

        The process check (then, without a handshake, the port's listener) and
        the handshake do not depend on each other, so they run at the same time
        (the process check may be done already: `process`, made by the host
        along with the status file's read). For a remote service, step 4 (the
        client's way in, direct or through the tunnel, and its own handshake),
        which needs only the port, starts here too and step 4 collects it if
        this state passes. Its handshake is the configured check of the same
        port, so when it passes the host's own (over a channel: two more round
        trips) is not made; only when it fails does the host's tell a service
        that stopped answering (stale) from one this machine cannot reach.
        Retries (a service still binding its port) follow only once the
        process is known to be ours.
        """
        port = handshake.port_of(state.data, self.config.handshake)
        if port is None:
            return handshake.missing_port(self.config.handshake)
        interface = service.server_interface(state)
        deadline = time.monotonic() + VERIFY_TIMEOUT

        def channel(timeout: float) -> Any:
            return service.host.tcp_channel(interface, port, timeout)

        def check_on_host(timeout: float = handshake.HANDSHAKE_TIMEOUT) -> str | None:
            return handshake.check(interface, port, self.config.handshake, channel, timeout)

        self.progress.phase(f"checking port {port}")
        batch = job_of(state) is not None
        if batch and (problem := service.identity_problem(state, process)) is not None:
            return problem  # the scheduler says the job ended: no tunnel to where it ran, no check of its port
        checked_here = self.config.remote and not (open_tunnel is None and service.node(state))
        if self.config.remote and self._way_in_for(state) is None:
            self._early_way_in = (state, Background(lambda: self._open_way_in(service, state, open_tunnel)))
        first = None if checked_here else Background(check_on_host)
        try:
            problem = None if batch else service.identity_problem(state, process)
            listener = self._listener_problem(service, state, port) if problem is None else None
        finally:
            if first is not None:
                first.wait()
        if problem is not None:
            return problem
        if first is not None:
            problem = first.result()  # raises what the check raised, e.g. a lost connection
        elif not self._answered_here(state):  # within what is left of the time both checks had side by side
            problem = check_on_host(max(handshake.MIN_TIMEOUT, deadline - time.monotonic()))
        if problem is None and listener is None:
            return None
        time.sleep(handshake.RETRY_INTERVAL)
        return handshake.wait_healthy(interface, port, self.config.handshake, deadline, channel) \
            or self._listener_problem(service, state, port)

    def _answered_here(self, state: ServerState) -> bool:
        """The handshake of the way in `_verify` started for `state` passed. One that raised did not (step 4
        raises it again)."""
        way_in = self._way_in_for(state)
        if way_in is None:
            return False
        try:
            return way_in.result()[1] is None
        except Exception:
            return False

    def _listener_problem(self, service: Service, state: ServerState, port: int) -> str | None:
        """Without a handshake, any listener would pass the check (sshd's port 22 too): the service's own
        process group must hold it. A host that cannot tell (no /proc) leaves the port unverified, which
        `status` says. Neither can a login node for a batch job's node (its processes are not there)."""
        if self.config.handshake is not None or state.pid is None or job_of(state) is not None:
            return None
        if service.host.listens(state.pid, port) is False:
            return f"port {port} on {service.host.name} is not the service's (another process listens there)"
        return None

    # 3. Launch, exactly once across concurrent runs.
    def _launch_once(self, service: Service, seen: ServerState | None) -> ServerState:
        with service.host.exec_ahead():  # the launch script's channel opens while the lock is taken
            return self._launch_locked(service, seen)

    def _launch_locked(self, service: Service, seen: ServerState | None) -> ServerState:
        lock = LaunchLock(service)
        while not lock.acquire_and_read_state():
            self.progress.phase("another run is launching the service; waiting")
            state = self._wait_for_other_launch(service, lock)
            if state is not None:
                return state
        try:
            state = lock.state_when_taken  # the status file, read right after the lock was taken
            if state is None and lock.unparsable:
                state = self._record_of_running_copy(service)
            if state is not None and state != seen and state.status in ("starting", "running") \
                    and service.is_ours(state):
                state = self._monitor(service, state, launched=False)
            else:
                if lock.found_file:
                    # A record was there but names no process of ours that runs: whatever an earlier launch of
                    # this key left running (found by its environment) goes first, so the launch is the only copy.
                    for pid, _signal in service.stop_unrecorded():
                        self.progress.phase(f"stopped process {pid} of {self.key}, which no valid record names")
                    service.host.remove(service.status_file)  # the old record must not pass for the new one
                self.progress.phase(f"launching service on {service.host.name}")
                state = self._start_service(service, lock)
                self.progress.phase("waiting for the service to report its port")
                state = self._monitor(service, state, launched=True, lock=lock, first_read=self._launch_read)
        except BaseException:
            # Releasing fails too when the connection is gone; what went wrong first is the error to report.
            try:
                lock.release()
            except LauncherError:
                pass
            raise
        lock.release()
        return state

    def _record_of_running_copy(self, service: Service) -> ServerState | None:
        """The status file does not parse even when read again. If processes a launch of this key started
        still run (its service, writing the file badly), wait up to UNPARSABLE_WAIT for a record they write
        rather than launch a second copy beside them. None: launch (after stopping them)."""
        deadline = time.monotonic() + UNPARSABLE_WAIT
        while (processes := service.key_processes()) and time.monotonic() < deadline:
            self.progress.phase(f"status file does not parse, but process {min(processes)} of {self.key} "
                                "runs; waiting for its record")
            state = service.read_state()
            if state is not None:
                return state
            time.sleep(service.host.poll_interval)
        return None

    def _wait_for_other_launch(self, service: Service, lock: LaunchLock) -> ServerState | None:
        """Watch the status file while another run holds the lock; None when the lock is gone."""
        deadline = time.monotonic() + self.config.startup_timeout + LOCK_GRACE
        while time.monotonic() < deadline:
            state = service.read_state()
            if state is not None and state.status == "starting" and service.is_ours(state):
                return self._monitor(service, state, launched=False)
            if lock.is_free_or_stale():
                return None
            self.progress.tick()
            time.sleep(service.host.poll_interval)
        raise self._error(LaunchError, service, "launch lock", f"another launch on {service.host.name} held the "
                          f"lock for more than {self.config.startup_timeout:.0f} s; remove {lock.path} if no "
                          "launcher is running")

    def start_successor(self, service: Service, current: ServerState) -> ServerState:
        """Submit the next batch job of a key whose job `current` still runs (walltime renewal): its files
        are `service.next_run()`'s, so nothing of the running job's changes; its record names the job it
        succeeds. Its queued record; LaunchError when the submission fails or another one is under way."""
        successor = service.next_run()
        job = job_of(current)
        assert job is not None
        lock = LaunchLock(successor)
        if not lock.acquire() and not (lock.is_free_or_stale() and lock.acquire()):
            raise self._error(LaunchError, successor, "renew", f"another run holds {lock.path}; not renewing now")
        try:
            return self._start_service(successor, lock, {SUCCESSOR_OF: job.id})
        except BaseException:
            try:
                lock.release()
            except LauncherError:
                pass
            raise

    def _start_service(self, service: Service, lock: LaunchLock, extra: dict[str, Any] | None = None) -> ServerState:
        """Run the launch script: the service starts detached and writes its own record (sh/launch.sh).
        `extra`: more fields of the record."""
        host = service.host
        workdir = host.expand(self.config.workdir)
        placeholders = scripts.port_placeholders(self.config.stock_ports, os.urandom(8).hex())
        ports = scripts.ports_spec(placeholders, self.config.port_range) if placeholders else ""
        command = evaluate_command(self.config, self.key, service.status_file, workdir, placeholders)
        record: dict[str, Any] = {
            "workdir": workdir,
            "log": service.log_file,
            "command": command,
            "network_interface": self.config.network_interface,
            "status": "starting",
        }
        if self.config.file_parameters is not None:
            record["parameters"] = self.config.file_parameters
        if self.config.meta is not None:
            record["meta"] = self.config.meta
        record.update(key=self.key, launcher="remote-http-launcher", version=__version__,
                      launched_at=time.time(), token=os.urandom(16).hex(), **(extra or {}))
        batch = self.config.scheduler
        self._launching = True  # until it answered: a Ctrl-C meanwhile leaves it set for _left_behind
        if batch is not None:  # a batch job: submitted, not started (the scheduler modules only then)
            from . import schedulers

            scheduler = schedulers.SCHEDULERS[batch.type]
            schedulers.check_renewal(scheduler, batch.options, batch.renew_before)
            job = schedulers.job_script(scheduler, workdir=workdir, status_file=service.status_file, record=record,
                                        command=command, conda=self.config.conda, ports=ports,
                                        setup=self.config.setup)
            args = schedulers.submit_args(workdir=workdir, log=service.log_file,
                                          status_file=service.status_file, job_file=service.job_file,
                                          conda=self.config.conda, name=self.key,
                                          lock=lock.path, lock_token=lock.token, options=batch.options)
            result = schedulers.run(host, schedulers.submit_program(scheduler), args,
                                    stdin=schedulers.submit_input(scheduler, record, job))
        else:
            args = scripts.launch_args(workdir=workdir, log=service.log_file, status_file=service.status_file,
                                       command=command, conda=self.config.conda, lock=lock.path,
                                       lock_token=lock.token, ports=ports, setup=self.config.setup)
            result = host.launch(Launch(args, scripts.record_head(record), key=self.key, workdir=workdir,
                                        command=command, conda=self.config.conda, record=record,
                                        ports=ports, setup=self.config.setup))
        self._launching = False
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.returncode}"
        for line in result.stderr.splitlines():
            if line.startswith(WARNING_PREFIX):
                self.progress.warn(f"{line[len(WARNING_PREFIX):]} (on {host.name})")
        answer, self._launch_read = launch_answer(result) if batch is None else (result.stdout.strip(), None)
        if result.returncode != 0 or not (answer if batch is not None else answer.isdigit()):
            step = LAUNCH_STEPS.get(result.returncode, "launch")
            raise self._error(LaunchError, service, step, f"{step} on {host.name}: {reason}")
        if batch is not None:
            lock.released_elsewhere()  # SUBMIT released it once the queued job was on record
            return ServerState(status="starting", pid=None, port=None, start_time=None, log=service.log_file,
                               data={**record, "scheduler": batch.type, "job_id": answer})
        pid = int(answer)
        return ServerState(status="starting", pid=pid, port=None, start_time=None, log=service.log_file,
                           data={**record, "pid": pid})

    def _monitor(self, service: Service, state: ServerState, *, launched: bool,
                 lock: LaunchLock | None = None, first_read: bytes | None = None) -> ServerState:
        """Scenario 2: poll until running or failed; a dead or silent process fails fast.

        `lock` (the launch lock) is released as soon as the new process's record
        is in the status file (the process removes it itself, right after
        writing the record): from then on other runs find it there and wait
        for it, so a run that dies or loses its connection while the service
        starts leaves no lock behind.

        The status file is read every poll; whether the process still lives is
        checked at most every PROCESS_CHECK_INTERVAL (over SSH it costs a round trip).
        Polls start FIRST_POLL apart and back off to the host's poll interval:
        most services are ready within tens of milliseconds. `first_read`: the
        status file as the launch script printed it, taken as the first poll.
        """
        self._watched = state
        job = job_of(state)
        if job is not None:
            return self._monitor_job(service, state, job, launched=launched)
        host, pid = service.host, state.pid
        starting = stock.StockStart(service, state)
        last_raw: bytes | None = None
        last_change = last_check = time.monotonic()
        pause = FIRST_POLL
        handshake.preload()  # while the service starts, not once it is up
        while True:
            raw, first_read = first_read if first_read is not None else host.read(service.status_file), None
            now = time.monotonic()
            if raw != last_raw:
                last_raw, last_change = raw, now
            current = ServerState.parse(statefiles.decode(raw))
            if lock is not None and current is not None and current.pid == pid:
                lock.released_elsewhere()
                lock = None
            if current is not None and current.pid not in (None, pid):
                if launched:
                    return self._taken_over(service, state, current)
                state, pid = current, current.pid
                self._watched = state
            if current is not None and current.status == "running":
                return current
            if current is not None and current.status == "failed":
                # a launched service that reports failure but lingers would be orphaned
                raise self._error(ServiceFailedError, service, "start", f"service on {host.name} reported status "
                                  "'failed'", current, with_log=True,
                                  stop=_later(service.terminate, current) if launched else None)
            state = current or state
            if now - last_check >= PROCESS_CHECK_INTERVAL or pid is None:
                last_check = now
                if current is not None and current.pid == pid and (running := starting.poll(current)):
                    return running
                if pid is None or (host.process_start_time(pid) is None and not service.is_ours(state)):
                    current = service.read_state()
                    if current is not None and current.status == "running":
                        return current
                    if not launched:
                        return current or state
                    raise self._error(ServiceFailedError, service, "start", f"service on {host.name} exited "
                                      "before reporting its port", state, with_log=True)
            if now - last_change > self.config.startup_timeout:
                raise self._error(ServiceFailedError, service, "start", self._silent(service, pid), state,
                                  with_log=True, stop=_later(service.terminate, state))
            self.progress.tick()
            time.sleep(min(pause, host.poll_interval))
            pause *= 2

    def _silent(self, service: Service, pid: int | None) -> str:
        """Why a service that started never counted as running: when it listens all the same, it wrote no
        `running` record; say so, and how a service reports (or how to have its port chosen for it)."""
        host, within = service.host, f"within {self.config.startup_timeout:.0f} s (stopped it)"
        try:
            ports = host.listening_ports(pid) if pid is not None else None
        except LauncherError:
            ports = None
        if not ports:
            return f"service on {host.name} did not report its port {within}"
        listening = ", ".join(map(str, ports))
        if self.config.stock_ports:
            return (f"service on {host.name} listens on port {listening} but not on the port {{port}} gave it "
                    f"{within}; make the command pass {{port}} to the server's own port option")
        return (f"service on {host.name} listens on port {listening} but never reported it through its status "
                f"file {within}; it must write {{\"status\": \"running\", \"port\": N}} to {{status_file}} "
                "(see the status-file protocol in the docs), or, for a server that cannot, pass {port} to it in "
                "command and the launcher chooses the port and reports it")

    def _left_behind(self, service: Service) -> str:
        """After Ctrl-C: what goes on without this run, and how to end it. A batch job still queued is
        cancelled (it would start later, unwatched, and use its walltime); one that runs is left to run."""
        state, host = self._watched, service.host
        if state is None and self._launching:  # the launch script waits for the record, which names the process
            try:
                state = service.read_state()
            except LauncherError:
                pass
        if state is None:
            return ""
        end = "'remote-http-launcher CONFIG' picks it up again, 'remote-http-launcher stop CONFIG' ends it"
        job = job_of(state)
        if job is None:
            return f"the service keeps starting on {host.name} (pid {state.pid}): {end}"
        from . import schedulers  # imported already: `job` came from it

        try:
            info = job.query(host)
            if info.state == schedulers.QUEUED:
                job.cancel(host)
                return f"cancelled job {job.id}, which was still queued"
        except LauncherError as exc:
            return f"job {job.id} may still be queued or running ({exc}): {end}"
        if info.state == schedulers.ENDED:
            return f"job {job.id} has ended"
        return f"job {job.id} keeps running on {info.node or host.name} and uses its walltime: {end}"

    def _taken_over(self, service: Service, launched: ServerState, current: ServerState) -> ServerState:
        """Another process's record replaced that of the process just launched (e.g. a running service
        rewrote a file that could not be parsed a moment before): stop what this launch started, and
        wait for the other one if it is verifiably ours; a launch never leaves a second copy behind."""
        host = service.host
        if launched.start_time is None and launched.pid is not None:  # its own record was never seen
            launched = launched._replace(start_time=host.process_start_time(launched.pid))
        if launched.start_time is not None:
            service.terminate(launched)
        if current.status in ("starting", "running") and service.is_ours(current):
            self.progress.phase(f"process {current.pid} already serves {self.key}; stopped the copy just launched")
            return self._monitor(service, current, launched=False)
        raise self._error(LaunchError, service, "monitor", f"status file {service.status_file} was taken over by "
                          f"process {current.pid} (the process just launched was stopped); run "
                          "'remote-http-launcher status CONFIG'")

    def _monitor_job(self, service: Service, state: ServerState, job: schedulers.Job, *,
                     launched: bool) -> ServerState:
        """Scenario 2 for a batch job: wait while it is queued (up to the queue timeout; a reason that can
        never clear fails at once), then, once it runs, for its status file to say running (within the
        startup timeout). A job given up on is cancelled, also one another run submitted: it is this
        config's job, and a job left queued would only be waited for again."""
        from . import schedulers  # imported already: `job` came from it

        host = service.host
        starting = stock.StockStart(service, state)
        assert self.config.scheduler is not None
        queue_timeout = self.config.scheduler.queue_timeout
        started = time.monotonic()
        running_since: float | None = None
        shown = ""
        pause = FIRST_POLL
        last_check, query_interval = 0.0, PROCESS_CHECK_INTERVAL
        while True:
            current = service.read_state()
            if current is not None and SUCCESSOR_OF in current.data and current.status != "running":
                current = self._adopt_successor(service, current)
            if current is not None and job_of(current) != job:
                if launched:
                    raise self._error(LaunchError, service, "monitor", f"status file {service.status_file} was "
                                      "taken over by another launch; run 'remote-http-launcher status CONFIG'")
                return current
            if current is not None and current.status == "running":
                return current
            state = current or state
            if current is not None and current.status == "failed":
                raise self._error(ServiceFailedError, service, "start", f"service in job {job.id} reported "
                                  "status 'failed'", state, with_log=True, stop=_later(job.cancel, host))
            now = time.monotonic()
            if now - last_check >= query_interval:
                last_check = now
                info = job.query(host)
                if info.state == schedulers.ENDED:
                    if not launched:
                        return state  # the caller finds the job gone and launches anew
                    raise self._error(ServiceFailedError, service, "start", f"job {job.id} ended "
                                      f"({info.raw_state}) before the service reported its port", state,
                                      with_log=True)
                if info.state == schedulers.QUEUED:
                    why = f"job {job.id} queued: {info.reason or 'waiting'}"
                    if job.scheduler.hopeless(info):
                        raise self._error(LaunchError, service, "queue", f"{why}, which waiting cannot clear "
                                          f"(cancelled the job); fix scheduler.options", stop=_later(job.cancel, host))
                    if now - started > queue_timeout:
                        raise self._error(LaunchError, service, "queue", f"{why} for more than "
                                          f"{queue_timeout:.0f} s (cancelled the job); raise "
                                          "scheduler.queue_timeout or ask for fewer resources",
                                          stop=_later(job.cancel, host))
                    text = why + (f", expected to start {info.start_estimate}" if info.start_estimate else "")
                    query_interval = min(2 * query_interval, JOB_QUERY_MAX_INTERVAL)  # the status file shows a start
                else:
                    running_since, query_interval = running_since or now, PROCESS_CHECK_INTERVAL
                    if current is not None and (running := starting.poll(current)):
                        return running
                    text = f"job {job.id} running on {info.node or '?'}; waiting for the service to report its port"
                    if now - running_since > self.config.startup_timeout:
                        raise self._error(ServiceFailedError, service, "start", f"service in job {job.id} did not "
                                          f"report its port within {self.config.startup_timeout:.0f} s "
                                          "(cancelled the job)", state, with_log=True, stop=_later(job.cancel, host))
                if text != shown:
                    self.progress.phase(text)
                    shown = text
            self.progress.tick()
            time.sleep(min(pause, host.poll_interval))
            pause *= 2

    def _adopt_successor(self, service: Service, current: ServerState) -> ServerState:
        """A renewal's job whose holder is gone reports under its own name (tunnels/renew.py): once its record
        is whole (it says running, or names a stock server's ports, which the launcher records itself), it
        becomes the key's; renamed earlier, a service still writing its own would lose it."""
        successor = service.next_run()
        own = successor.read_state()
        if own is None or job_of(own) != job_of(current) or \
                (own.status != "running" and stock.chosen_ports(own) is None):
            return current
        return own if service.host.rename(successor.status_file, service.status_file) else current

    # 4. The client's way in.
    def _client_payload(self, service: Service, state: ServerState,
                        open_tunnel: TunnelOpener | None) -> ClientPayload:
        way_in = self._way_in_for(state)
        if way_in is not None:
            payload, problem = way_in.result()  # started by _verify or _guess_way_in for this record
        else:
            payload, problem = self._open_way_in(service, state, open_tunnel)
        port = handshake.port_of(payload, self.config.handshake)
        if problem is not None and port is not None:
            out_of_reach = self._bound_out_of_reach(payload["hostname"])
            if not out_of_reach:  # e.g. a port still being opened: retry for a while
                problem = handshake.wait_healthy(payload["hostname"], port, self.config.handshake,
                                                 time.monotonic() + VERIFY_TIMEOUT)
            if problem is not None:
                raise self._error(HandshakeError, service, "handshake", f"the service runs on "
                                  f"{service.host.name}, but from this machine {problem}"
                                  f"{self._why_unreachable(out_of_reach)}")
        return payload  # type: ignore[return-value]  # what _open_way_in made: a client payload

    def _bound_out_of_reach(self, hostname: str) -> bool:
        """Direct mode to a service that listens on its server's loopback, from elsewhere: it answered the
        server (`_verify`), it cannot answer here, so there is nothing to wait for."""
        if not self.config.remote or self.config.tunnel:
            return False
        return is_loopback(self.config.network_interface) and not is_loopback(hostname)

    def _why_unreachable(self, out_of_reach: bool) -> str:
        """What to change when this machine cannot reach a service it connects to directly."""
        if out_of_reach:
            return (f"; it listens on the server's own {self.config.network_interface} (network_interface), which "
                    "only the server reaches: set 'tunnel: true' to reach it over SSH, or a network_interface "
                    "other machines reach (e.g. 0.0.0.0, every interface)")
        if self.config.remote and not self.config.tunnel:
            return "; a firewall between here and the server? 'tunnel: true' reaches the service over SSH"
        return ""

    def _open_way_in(self, service: Service, state: ServerState,
                     open_tunnel: TunnelOpener | None) -> WayIn:
        """The client payload (direct, or through the tunnel `open_tunnel` opens) and, for a remote
        service, the problem with one handshake from this machine (None: it answered)."""
        assert state.port is not None
        if open_tunnel is not None:
            payload = open_tunnel(service, state)
        elif self.config.remote:
            assert self.config.hostname is not None
            node = service.node(state)  # a batch job's node, for clients inside the cluster
            payload = {"hostname": node or self.config.hostname, "port": state.port, **state.extra_ports()}
            if self.config.ssh_hostname and self.config.ssh_hostname != self.config.hostname:
                payload["ssh_hostname"] = self.config.ssh_hostname
        else:
            interface = state.data.get("network_interface") or self.config.network_interface
            payload = {"hostname": WILDCARD_CLIENT_HOSTS.get(interface, interface), "port": state.port,
                       **state.extra_ports()}
        if isinstance(state.data.get("parameters"), dict):
            payload["parameters"] = state.data["parameters"]
        if self.config.meta is not None:
            payload["meta"] = dict(self.config.meta)
        if not self.config.remote or (open_tunnel is None and service.node(state)):
            return payload, None  # a job's node answers the login node (checked); this machine may not reach it
        port = handshake.port_of(payload, self.config.handshake)
        if port is None:
            return payload, handshake.missing_port(self.config.handshake)
        return payload, handshake.check(payload["hostname"], port, self.config.handshake)


def check_direct_reachable(config: Config) -> None:
    """Direct mode (`tunnel: false`): this machine connects to `hostname` itself, so a name that does not
    resolve here (typically an ~/.ssh/config alias, which only SSH knows) is refused before anything is
    started, rather than a launch followed by "no HTTP answer"."""
    if not config.remote or config.tunnel:
        return
    assert config.hostname is not None
    if not handshake.resolves(config.hostname):
        where = "" if config.ssh_hostname else " (an ~/.ssh/config alias? SSH knows those, this check does not)"
        raise ConfigError(f"hostname: {config.hostname!r} does not resolve on this machine{where}; with "
                          "'tunnel: false' this machine connects to hostname itself: set 'tunnel: true', or "
                          "set hostname to the server's address (and ssh_hostname to the alias)")


def check_local_port(config: Config, client_path: PathArg) -> None:
    """`local_port` must be free on this machine, or held by our own tunnel for the same key (the one the
    client file names, which its keeper or broker takes again): checked before anything is launched, so a
    port taken by another program is one error, not a launched service without its way in."""
    import socket
    import sys

    if config.local_port is None:
        return
    with socket.socket() as probe:
        if sys.platform != "win32":  # as the tunnel's listener: a port in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((stock.TUNNEL_HOST, config.local_port))
            return
        except OSError as exc:
            problem = exc.strerror or str(exc)
    ours = statefiles.read_payload(client_path)
    if ours is not None and ours.get("port") == config.local_port and "tunneled-port" in ours:
        return
    raise LauncherError(f"local_port: 127.0.0.1:{config.local_port} is in use by another program ({problem}); "
                        "free it or choose another local_port", step="local_port")


class LaunchLock(FileLock):
    """The per-key launch lock beside the status file, on the service's host.

    Stale when its owner process is gone (known when it ran on this machine)
    or when it is older than the startup timeout and LOCK_GRACE.
    """

    def __init__(self, service: Service) -> None:
        super().__init__(service.host, service.lock_file)
        self.service = service
        self.state_when_taken: ServerState | None = None
        self.found_file = False  # a status file was there when the lock was taken
        self.unparsable = False  # ... but half written (service.half_written), even read again

    def acquire_and_read_state(self) -> bool:
        """Take the lock; then `state_when_taken` is the status file as read right after (in the same flight
        as writing the lock, over SSH)."""
        raw = self.acquire_then_read(self.service.status_file)
        if self.held and half_written(raw):
            raw = self.service.read_status()  # rewritten in place at this moment, or corrupt: read it again
        self.found_file = raw is not None
        self.unparsable = half_written(raw)
        self.state_when_taken = ServerState.parse(statefiles.decode(raw))
        return self.held

    def is_free_or_stale(self) -> bool:
        """True when the lock is gone, or was stale and is now broken."""
        limit = self.service.config.startup_timeout + LOCK_GRACE
        return self.break_if_stale(self.host.read(self.path),
                                   lambda owner: not owner.process_gone() and time.time() - owner.taken_at <= limit,
                                   LOCK_GRACE)


def _later(function: Callable[[T], object], argument: T) -> Callable[[], object]:
    """`function(argument)`, to be called later: functools.partial without importing functools (records.py)."""
    return lambda: function(argument)
