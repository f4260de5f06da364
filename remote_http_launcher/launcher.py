"""The launcher's state machine: find the service if it runs, start it if not.

It follows the original's numbered sequence:
  1. the client connection file (possibility A: reuse it; B: go on);
  2. the server status file: running (verify), starting (monitor), absent,
     failed or stale (launch; at most one relaunch);
  3. launch detached, under a per-key lock so concurrent runs start it once;
  4. open the client's way in (direct, or a tunnel);
  5. write the client connection file.
It never knows whether its `Host` is this machine or an SSH server.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from . import handshake, keeperlock, processes, scripts, statefiles
from .config import Config
from .errors import ConfigError, HandshakeError, LaunchError, ServiceFailedError
from .progress import Progress
from .statefiles import ServerState
from .templates import render

if TYPE_CHECKING:
    from .hosts import Host

__version__ = "0.1.0"

TunnelOpener = Callable[["Service", ServerState], dict[str, Any]]
WayIn = tuple[dict[str, Any], str | None]  # the client payload, and the problem with its first handshake
T = TypeVar("T")
MAX_LAUNCHES = 2  # the first launch and at most one relaunch
VERIFY_TIMEOUT = 5.0
FIRST_POLL = 0.01  # seconds before the first re-read of a starting service's status file (then doubling)
PROCESS_CHECK_INTERVAL = 0.3
LOCK_GRACE = 10.0
KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_KEY = 200
WILDCARD_CLIENT_HOSTS = {"0.0.0.0": "localhost", "::": "localhost"}
WILDCARD_SERVER_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def evaluate_key(config: Config) -> str:
    """The state-file name; computed without touching any host, so the warm path stays local."""
    key = render(config.key_template, template_namespace(config), field="key")
    if not key or len(key) > MAX_KEY or key in (".", "..") or not set(key) <= KEY_CHARS:
        raise ConfigError(f"key: evaluated to {key[:80]!r}, which is not a plain file name "
                          f"(use letters, digits, '.', '_' and '-', at most {MAX_KEY} characters)")
    return key


def evaluate_command(config: Config, key: str, status_file: str) -> str:
    command = render(config.command_template, template_namespace(config, key=key, status_file=status_file),
                     field="command")
    if not command.strip() or any(c in command for c in "\n\r\0"):
        raise ConfigError("command: must evaluate to one non-empty line")
    return command


def template_namespace(config: Config, **extra: str) -> dict[str, Any]:
    names = {name: value for name, value in config.raw.items() if name.isidentifier()}
    return {**names, "config": dict(config.raw), **extra}


def client_file(config: Config, key: str, connection_dir: str | os.PathLike[str] | None) -> Path:
    directory = statefiles.client_dir(connection_dir)
    if not config.remote:
        statefiles.check_distinct(directory, statefiles.local_server_dir())
    return directory / f"{key}.json"


class Service(NamedTuple):
    """One service (a config's key) on one host: where its files are."""

    host: Host
    config: Config
    key: str

    @property
    def status_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.json"

    @property
    def log_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.log"

    @property
    def lock_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.lock"

    def read_state(self) -> ServerState | None:
        return ServerState.parse(statefiles.decode(self.host.read_state_file(f"{self.key}.json")))

    def server_interface(self, state: ServerState) -> str:
        interface = state.data.get("network_interface")
        if not isinstance(interface, str) or not interface:
            interface = self.config.network_interface
        return WILDCARD_SERVER_HOSTS.get(interface, interface)

    def log_tail(self, state: ServerState | None = None) -> str:
        path = state.log if state and state.log else self.log_file
        tail = self.host.tail(path).strip()
        return " | ".join(line.strip() for line in tail.splitlines() if line.strip()) or "(log is empty)"


class Launcher:
    """One `up` run for one config."""

    def __init__(self, config: Config, *, connection_dir: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.key = evaluate_key(config)
        self.dry_run()  # a bad command template fails here, before any file is read, written or started
        self.client_path = client_file(config, self.key, connection_dir)
        self.progress = progress or Progress.silent()
        self._early_way_in: tuple[ServerState, Background[WayIn]] | None = None  # step 4, started by _verify

    def dry_run(self) -> str:
        """The command a launch would run; nothing is connected, written or started."""
        state_dir = statefiles.REMOTE_STATE_DIR if self.config.remote else str(statefiles.local_server_dir().absolute())
        return evaluate_command(self.config, self.key, f"{state_dir}/{self.key}.json")

    def up(self) -> dict[str, Any]:
        self.progress.phase("checking connection file")
        payload = self._reuse_client_file()
        if payload is not None:
            self.progress.done(payload, reused=True)
            return payload
        if self.config.tunnel:
            from .spawn import start_keeper  # the tunnel outlives this process: a keeper process runs steps 2-5

            payload, reused = start_keeper(self)
            self.progress.done(payload, reused=reused)
            return payload
        from .hosts import open_host  # host machinery (subprocess, SSH) only once the warm path missed

        self.progress.phase(f"connecting to {self.config.ssh_target}" if self.config.remote else "checking server state")
        with open_host(self.config) as host:
            payload, _ = self.serve(host)
        self.progress.done(payload, reused=False)
        return payload

    def serve(self, host: Host, open_tunnel: TunnelOpener | None = None) -> tuple[dict[str, Any], ServerState]:
        """Steps 2-5 on a connected host; `open_tunnel` (the keeper's) makes the client's way in."""
        service = Service(host, self.config, self.key)
        state = self._ensure_running(service, open_tunnel)
        self.progress.phase("connecting client")
        payload = self._client_payload(service, state, open_tunnel)
        statefiles.write_atomic(self.client_path, statefiles.encode(payload))
        return payload, state

    # 1. The client connection file.
    def _reuse_client_file(self) -> dict[str, Any] | None:
        payload = statefiles.decode(statefiles.read_bytes(self.client_path))
        if payload is None:
            statefiles.remove(self.client_path)
            return None
        if keeperlock.still_serving(self.client_path, self.key, payload) \
                and handshake.payload_answers(payload, self.config.handshake):
            return payload
        statefiles.remove(self.client_path)
        return None

    # 2. The server status file.
    def _ensure_running(self, service: Service, open_tunnel: TunnelOpener | None = None) -> ServerState:
        launches = 0
        while True:
            state = service.read_state()
            if state is not None and state.status == "starting" and processes.is_ours(service.host, state):
                self.progress.phase("waiting for the service to start")
                Lock(service).is_free_or_stale()  # breaks the lock of a launcher that died before releasing it
                state = self._monitor(service, state, launched=False)
            if state is not None and state.status == "running":
                problem = self._verify(service, state, open_tunnel)
                if problem is None:
                    return state
                self.progress.phase(f"stale service ({problem}); stopping it")
                processes.terminate(service.host, state)
            if launches >= MAX_LAUNCHES:
                raise LaunchError(f"{self.key}: service on {service.host.name} did not stay up after "
                                  f"{launches} launches; run 'remote-http-launcher logs CONFIG' to see why")
            launches += 1
            state = self._launch_once(service, state)
            if state.status == "running":
                problem = self._verify(service, state, open_tunnel)
                if problem is None:
                    return state
                processes.terminate(service.host, state)
                raise HandshakeError(f"{self.key}: service on {service.host.name} reported port {state.port} "
                                     f"but {problem}; log: {service.log_tail(state)}")

    def _verify(self, service: Service, state: ServerState, open_tunnel: TunnelOpener | None = None) -> str | None:
        """Scenario 1: the recorded process is ours and alive, and it answers on its port.

        The process check and the first handshake do not depend on each other,
        so they run at the same time: over SSH each costs two round trips. So
        does step 4 for a remote service (the client's way in and its own
        handshake, direct or through the tunnel), which needs only the port:
        it starts here too, and step 4 collects it if this state passes.
        Retries (a service still binding its port) follow only once the
        process is known to be ours.
        """
        port = state.port
        assert port is not None
        interface = service.server_interface(state)
        deadline = time.monotonic() + VERIFY_TIMEOUT

        def channel(timeout: float) -> Any:
            return service.host.tcp_channel(interface, port, timeout)

        self.progress.phase(f"checking port {port}")
        if self.config.remote:
            self._early_way_in = (state, Background(
                "rhl-client", lambda: self._open_way_in(service, state, open_tunnel)))
        first = Background("rhl-verify", lambda: handshake.check(interface, port, self.config.handshake, channel))
        try:
            ours = processes.is_ours(service.host, state)
        finally:
            first.wait()
        if not ours:
            return f"process {state.pid} is gone"
        if first.result() is None:  # raises what the check raised, e.g. HostError: the connection is gone
            return None
        time.sleep(handshake.RETRY_INTERVAL)
        return handshake.wait_healthy(interface, port, self.config.handshake, deadline, channel)

    # 3. Launch, exactly once across concurrent runs.
    def _launch_once(self, service: Service, seen: ServerState | None) -> ServerState:
        lock = Lock(service)
        while not lock.acquire():
            self.progress.phase("another run is launching the service; waiting")
            state = self._wait_for_other_launch(service, lock)
            if state is not None:
                return state
        try:
            state = lock.state_when_taken  # the status file, read right after the lock was taken
            if state is not None and state != seen and state.status in ("starting", "running") \
                    and processes.is_ours(service.host, state):
                return self._monitor(service, state, launched=False)
            self.progress.phase(f"launching service on {service.host.name}")
            if state is not None:
                service.host.remove(service.status_file)  # the old record must not pass for the new one
            state = self._spawn(service, lock)
            self.progress.phase("waiting for the service to report its port")
            return self._monitor(service, state, launched=True, lock=lock)
        finally:
            lock.release()

    def _wait_for_other_launch(self, service: Service, lock: Lock) -> ServerState | None:
        """Watch the status file while another run holds the lock; None when the lock is gone."""
        deadline = time.monotonic() + self.config.startup_timeout + LOCK_GRACE
        while time.monotonic() < deadline:
            state = service.read_state()
            if state is not None and state.status == "starting" and processes.is_ours(service.host, state):
                return self._monitor(service, state, launched=False)
            if lock.is_free_or_stale():
                return None
            self.progress.tick()
            time.sleep(service.host.poll_interval)
        raise LaunchError(f"{self.key}: another launch on {service.host.name} held the lock for more than "
                          f"{self.config.startup_timeout:.0f} s; remove {lock.path} if no launcher is running")

    def _spawn(self, service: Service, lock: Lock) -> ServerState:
        host = service.host
        workdir = host.expand(self.config.workdir)
        command = evaluate_command(self.config, self.key, service.status_file)
        record: dict[str, Any] = {
            "workdir": workdir,
            "log": service.log_file,
            "command": command,
            "network_interface": self.config.network_interface,
            "status": "starting",
        }
        if self.config.file_parameters is not None:
            record["parameters"] = self.config.file_parameters
        record.update(key=self.key, launcher="remote-http-launcher", version=__version__,
                      launched_at=time.time(), token=os.urandom(16).hex())
        args = scripts.launch_args(workdir=workdir, log=service.log_file, status_file=service.status_file,
                                   command=command, conda=self.config.conda, record=record,
                                   lock=lock.path, lock_token=lock.token)
        result = host.run_script(scripts.LAUNCH, args)
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.returncode}"
        if result.returncode != 0 or not result.stdout.strip().isdigit():
            step = {scripts.EXIT_WORKDIR: "workdir", scripts.EXIT_LOG: "log file",
                    scripts.EXIT_NO_CONDA: "conda", scripts.EXIT_NO_CONDA_ENV: "conda",
                    scripts.EXIT_STATE_DIR: "state directory"}.get(result.returncode, "launch")
            raise LaunchError(f"{self.key}: {step} on {host.name}: {reason}")
        return ServerState(status="starting", pid=int(result.stdout.strip()), port=None, start_time=None,
                           log=service.log_file, data={**record, "pid": int(result.stdout.strip())})

    def _monitor(self, service: Service, state: ServerState, *, launched: bool,
                 lock: Lock | None = None) -> ServerState:
        """Scenario 2: poll until running or failed; a dead or silent process fails fast.

        `lock` (the launch lock) is released as soon as the new process's record
        is in the status file (the process removes it itself, right after
        writing the record): from then on other runs find it there and wait
        for it, so a run that dies or loses its connection while the service
        starts leaves no lock behind.

        The status file is read every poll; whether the process still lives is
        checked at most every PROCESS_CHECK_INTERVAL (over SSH it costs a round trip).
        Polls start FIRST_POLL apart and back off to the host's poll interval:
        most services are ready within tens of milliseconds.
        """
        host, pid = service.host, state.pid
        last_raw: bytes | None = None
        last_change = last_check = time.monotonic()
        pause = FIRST_POLL
        while True:
            raw = host.read(service.status_file)
            now = time.monotonic()
            if raw != last_raw:
                last_raw, last_change = raw, now
            current = ServerState.parse(statefiles.decode(raw))
            if lock is not None and current is not None and current.pid == pid:
                lock.released_by_service()
                lock = None
            if current is not None and current.pid not in (None, pid):
                if launched:
                    raise LaunchError(f"{self.key}: status file {service.status_file} was taken over by "
                                      f"process {current.pid}; run 'remote-http-launcher status CONFIG'")
                state, pid = current, current.pid
            if current is not None and current.status == "running":
                return current
            if current is not None and current.status == "failed":
                if launched:  # a service that reports failure but lingers would be orphaned
                    processes.terminate(host, current)
                raise ServiceFailedError(f"{self.key}: service on {host.name} reported status 'failed'; "
                                  f"log: {service.log_tail(current)}")
            state = current or state
            if now - last_check >= PROCESS_CHECK_INTERVAL or pid is None:
                last_check = now
                if pid is None or host.process_start_time(pid) is None:
                    current = service.read_state()
                    if current is not None and current.status == "running":
                        return current
                    if not launched:
                        return current or state
                    raise ServiceFailedError(f"{self.key}: service on {host.name} exited before reporting its port; "
                                      f"log: {service.log_tail(state)}")
            if now - last_change > self.config.startup_timeout:
                processes.terminate(host, state)
                raise ServiceFailedError(f"{self.key}: service on {host.name} did not report its port within "
                                  f"{self.config.startup_timeout:.0f} s (stopped it); log: {service.log_tail(state)}")
            self.progress.tick()
            time.sleep(min(pause, host.poll_interval))
            pause *= 2

    # 4. The client's way in.
    def _client_payload(self, service: Service, state: ServerState,
                        open_tunnel: TunnelOpener | None) -> dict[str, Any]:
        if self._early_way_in is not None and self._early_way_in[0] is state:
            payload, problem = self._early_way_in[1].result()  # started by _verify for this state
        else:
            payload, problem = self._open_way_in(service, state, open_tunnel)
        if problem is not None:  # e.g. a port still being opened: retry for a while
            problem = handshake.wait_healthy(payload["hostname"], payload["port"], self.config.handshake,
                                             time.monotonic() + VERIFY_TIMEOUT)
            if problem is not None:
                raise HandshakeError(f"{self.key}: the service runs on {service.host.name}, but from this "
                                     f"machine {problem}")
        return payload

    def _open_way_in(self, service: Service, state: ServerState,
                     open_tunnel: TunnelOpener | None) -> WayIn:
        """The client payload (direct, or through the tunnel `open_tunnel` opens) and, for a remote
        service, the problem with one handshake from this machine (None: it answered)."""
        assert state.port is not None
        if open_tunnel is not None:
            payload = open_tunnel(service, state)
        elif self.config.remote:
            assert self.config.hostname is not None
            payload = {"hostname": self.config.hostname, "port": state.port, **state.extra_ports()}
            if self.config.ssh_hostname and self.config.ssh_hostname != self.config.hostname:
                payload["ssh_hostname"] = self.config.ssh_hostname
        else:
            interface = state.data.get("network_interface") or self.config.network_interface
            payload = {"hostname": WILDCARD_CLIENT_HOSTS.get(interface, interface), "port": state.port,
                       **state.extra_ports()}
        if isinstance(state.data.get("parameters"), dict):
            payload["parameters"] = state.data["parameters"]
        if not self.config.remote:
            return payload, None
        return payload, handshake.check(payload["hostname"], payload["port"], self.config.handshake)


class Background(Generic[T]):
    """A call running on a daemon thread; `result()` waits for it and returns or raises what it did."""

    def __init__(self, name: str, call: Callable[[], T]) -> None:
        self._returned: list[T] = []
        self._raised: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._returned.append(call())
        except BaseException as exc:  # handed to whoever asks for the result
            self._raised.append(exc)

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> T:
        self.wait()
        if self._raised:
            raise self._raised[0]
        return self._returned[0]


class Lock:
    """A per-key launch lock on the service's host: exclusive create, owner and time inside.

    A lock whose owner process is gone (checked when the owner ran on this
    machine) or that is older than the startup timeout is broken by renaming it
    aside first, so two waiters never both break it and both launch.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.path = service.lock_file
        self.token = os.urandom(16).hex()
        self.held = False
        self.state_when_taken: ServerState | None = None

    def acquire(self) -> bool:
        """Take the lock; then `state_when_taken` is the status file as read right after (in the same flight
        as writing the lock, over SSH)."""
        info = {"owner": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": self.token}
        self.held, raw = self.service.host.create_then_read(self.path, json.dumps(info).encode(),
                                                            self.service.status_file)
        self.state_when_taken = ServerState.parse(statefiles.decode(raw))
        return self.held

    def release(self) -> None:
        if self.held and (statefiles.decode(self.service.host.read(self.path)) or {}).get("token") == self.token:
            self.service.host.remove(self.path)
        self.held = False

    def released_by_service(self) -> None:
        """The service we launched removed the lock after writing its record (scripts.SERVICE_PRELUDE)."""
        self.held = False

    def is_free_or_stale(self) -> bool:
        host = self.service.host
        raw = host.read(self.path)
        if raw is None:
            return True
        info = statefiles.decode(raw)
        if info is None:
            mtime = host.mtime(self.path)
            stale = mtime is not None and time.time() - mtime > LOCK_GRACE
        else:
            stale = self._owner_gone(info) or time.time() - float(info.get("time", 0)) > \
                self.service.config.startup_timeout + LOCK_GRACE
        if stale:
            self._break(raw)
        return stale

    @staticmethod
    def _owner_gone(info: dict[str, Any]) -> bool:
        pid = info.get("pid")
        if info.get("owner") != socket.gethostname() or not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            return False
        return False

    def _break(self, seen: bytes) -> None:
        """Remove the lock only if it still holds what was judged stale."""
        host = self.service.host
        aside = f"{self.path}.{self.token}.broken"
        if not host.rename(self.path, aside):
            return
        moved = host.read(aside)
        if moved != seen and moved is not None:
            host.create_exclusive(self.path, moved)  # a fresh lock was moved by mistake: put it back
        host.remove(aside)
