"""An in-memory `Host` for fast tests of the launcher's state machine (tests/test_state_machine.py).

Files live in a dict; processes are a table of PIDs with start times; each
shell program the package runs (scripts.program) is answered by a Python
function chosen by the program's identity (its text), which a test can
replace, e.g. to make the launch start a process or fail with an exit code.
A program without an answer fails the test: the state machine ran something
the test did not expect. TCP goes to real sockets (the test's HTTP server):
the handshake is real. The real hosts are covered by the sshd and local tests.
"""

from __future__ import annotations

import json
import posixpath
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from remote_http_launcher import scripts
from remote_http_launcher.hosts.base import Host, ScriptResult, read_from_bytes
from remote_http_launcher.schedulers import SCHEDULERS, submit_program

Answer = Callable[[list[str], bytes], ScriptResult]
OK, NO = ScriptResult(0, "", ""), ScriptResult(1, "", "")


class Process(NamedTuple):
    start_time: str
    listens: frozenset[int] = frozenset()


class FakeHost(Host):
    name = "fakehost"
    poll_interval = 0.01

    def __init__(self, home: str = "/home/fake") -> None:
        self._home = home
        self.files: dict[str, bytes] = {}
        self.mtimes: dict[str, float] = {}
        self.processes: dict[int, Process] = {}
        self.next_pid = 1000
        self.ran: list[str] = []  # the programs run, by name, in order
        self.signals: list[tuple[int, str]] = []
        self.reads: dict[str, int] = {}
        self.after_reads: dict[str, tuple[int, bytes | None]] = {}  # path: (after N reads, the new contents)
        self.answers: dict[str, Answer] = {
            "process_info": self._process_info,
            "group_alive": lambda args, stdin: NO,
            "port_listener": self._port_listener,
            "signal_group": self._signal_group,
            "kill_group": lambda args, stdin: OK,
            "key_processes": lambda args, stdin: OK,
        }
        self._names = {scripts.program(name): name for name in self.answers}
        self._names[scripts.program("prepare", "launch")] = "launch"
        for scheduler in SCHEDULERS.values():
            self._names[submit_program(scheduler)] = f"submit ({scheduler.name})"

    # ---- what tests set up and look at ----
    def start(self, *, listens: tuple[int, ...] = ()) -> int:
        """A new live process; its PID."""
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.processes[pid] = Process(f"proc:{pid * 7}", frozenset(listens))
        return pid

    def write_json(self, path: str, record: dict[str, Any]) -> None:
        self.write_atomic(path, json.dumps(record).encode())

    def json(self, path: str) -> Any:
        raw = self.files.get(path)
        return None if raw is None else json.loads(raw)

    # ---- Host ----
    @property
    def home(self) -> str:
        return self._home

    @property
    def state_dir(self) -> str:
        return f"{self._home}/.remote-http-launcher/server"

    def read(self, path: str) -> bytes | None:
        self.reads[path] = self.reads.get(path, 0) + 1
        pending = self.after_reads.get(path)
        if pending is not None and self.reads[path] > pending[0]:
            del self.after_reads[path]
            if pending[1] is None:
                self.remove(path)
            else:
                self.write_atomic(path, pending[1])
        return self.files.get(path)

    def mtime(self, path: str) -> float | None:
        return self.mtimes.get(path)

    def write_atomic(self, path: str, data: bytes) -> None:
        self.files[path] = data
        self.mtimes[path] = time.time()

    def create_exclusive(self, path: str, data: bytes) -> bool:
        if path in self.files:
            return False
        self.write_atomic(path, data)
        return True

    def rename(self, source: str, target: str) -> bool:
        if source not in self.files:
            return False
        self.files[target], self.mtimes[target] = self.files.pop(source), self.mtimes.pop(source)
        return True

    def remove(self, path: str) -> None:
        self.files.pop(path, None)
        self.mtimes.pop(path, None)

    def listdir(self, path: str) -> list[str]:
        return sorted({posixpath.basename(name) for name in self.files if posixpath.dirname(name) == path})

    def read_from(self, path: str, offset: int, limit: int | None = None) -> tuple[bytes, int] | None:
        data = self.files.get(path)
        return None if data is None else read_from_bytes(data, offset, limit)

    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        name = self._names.get(script)
        assert name is not None, f"an unknown program ran: {script[-300:]!r}"
        self.ran.append(name)
        answer = self.answers.get(name)
        assert answer is not None, f"the test gave no answer for the program {name}"
        return answer(args, stdin)

    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        return socket.create_connection((host, port), timeout)

    # ---- the programs' default answers ----
    def _process_info(self, args: list[str], stdin: bytes) -> ScriptResult:
        process = self.processes.get(int(args[0]))
        return NO if process is None else ScriptResult(0, process.start_time + "\n", "")

    def _port_listener(self, args: list[str], stdin: bytes) -> ScriptResult:
        process = self.processes.get(int(args[0]))
        if args[1] == "-":
            return ScriptResult(0, "".join(f"{port:04X}\n" for port in process.listens) if process else "", "")
        return OK if process is not None and int(args[1]) in process.listens else NO

    def _signal_group(self, args: list[str], stdin: bytes) -> ScriptResult:
        signal, pid = args[0], int(args[1])
        self.signals.append((pid, signal))
        return OK if self.processes.pop(pid, None) is not None else NO
