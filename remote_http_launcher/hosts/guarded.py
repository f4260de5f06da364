"""An SSH server whose authorized_keys force the original's `rhl-guard`: only its `rhl-*` helpers run there.

Such a session runs no `sh` and no SFTP (port forwarding still works), so
each Host call becomes the helper that does the same on the server
(remote-http-launcher 0.4.5's): status files are read with `rhl-inspect`,
logs with `rhl-logs`, listed with `rhl-ps`, removed with `rhl-rm`; services
are started by `rhl-launch-service` and stopped by `rhl-stop` (which take a
key, not a PID); a PID is only known to live (`rhl-pid-alive`), which is all
the original checks either. The helpers resolve `~` themselves, so paths
stay `~/...` here. What the helpers cannot do (write a file, run a script)
gets the guard's own refusal, as the server gives it; a helper's refusal is
a one-line HostError quoting it.

hosts/ssh.py finds out that a server is guarded when its first step (SFTP)
fails and an exec channel then gets the guard's refusal; a normal server
never pays for that.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import statefiles
from ..errors import HostError
from ..processes import UNIDENTIFIED
from .base import Host, Launch, ScriptResult, read_from_bytes

if TYPE_CHECKING:
    from ..ssh.connection import SSHConnection

#: How rhl-guard starts a refusal on stderr (then exit status 1), in 0.4.5's ssh_guard/guard.py.
REFUSAL = "rhl-guard: "
REJECTED = "rhl-guard: rejected: "
GUARD_POLL_INTERVAL = 0.2  # as SSHHost's: each helper call is one round trip
SERVER_DIR_SUFFIX = "/.remote-http-launcher/server"  # the helpers' state directory, under any home
KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]+")  # the helpers' validate_key
NO_STATE = "no state file for"  # rhl-inspect's answer for a key without a status file
NO_LOG = "no log file for"  # rhl-logs'
SHELL_SYNTAX = re.compile(r"[;&|<>()`]+")
STEP = "rhl-guard"

Exec = Callable[[str, bytes], tuple[int, bytes, bytes]]


def refusal_of(stderr: bytes) -> str | None:
    """The guard's reason when `stderr` is its refusal of a command, else None."""
    text = stderr.decode(errors="replace").strip()
    return text.removeprefix(REJECTED) if text.startswith(REJECTED) else None


def _last_line(text: str) -> str:
    """A helper's message is its last line (a Python traceback's too)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class GuardedHost(Host):
    """A guarded SSH server (see the module doc); `run` runs one command line in an exec channel."""

    poll_interval = GUARD_POLL_INTERVAL

    def __init__(self, connection: SSHConnection, name: str, run: Exec, reason: str) -> None:
        self.connection = connection
        self.name = name
        self.run = run
        self.reason = reason  # the guard's refusal of `sh` (hosts/ssh.py probes with it once SFTP failed)
        self._keys_by_pid: dict[int, str] = {}  # rhl-stop takes a key: the records read say whose a PID is

    @property
    def home(self) -> str:
        return "~"

    @property
    def state_dir(self) -> str:
        return statefiles.REMOTE_STATE_DIR

    # ---- the helpers ----
    def helper(self, *argv: str) -> tuple[int, bytes, str]:
        """(exit status, stdout, stderr) of an rhl-* helper; the guard's refusal of it is a HostError."""
        code, out, err = self.run(shlex.join(argv), b"")
        if code != 0 and err.decode(errors="replace").startswith(REFUSAL):
            raise self.refused(argv[0], err)
        return code, out, err.decode(errors="replace").strip()

    def refused(self, what: str, stderr: bytes) -> HostError:
        """The guard's refusal of the helper `what`, quoted."""
        return HostError(f"{self.name}: the server's rhl-guard (authorized_keys command=) refused {what}: "
                         f"{_last_line(stderr.decode(errors='replace'))}", host=self.name, step=STEP)

    def unable(self, what: str) -> HostError:
        """A step no helper does."""
        return HostError(f"{self.name}: cannot {what}: the server's rhl-guard (authorized_keys command=) runs "
                         f"only rhl-* helpers (it refused sh: {self.reason})", host=self.name, step=STEP)

    def _failed(self, what: str, err: str) -> HostError:
        return HostError(f"{self.name}: {what} failed: {_last_line(err)}", host=self.name, step=STEP)

    def _key(self, path: str, suffix: str) -> str | None:
        """The key of a state file `path` of the helpers' directory ending in `suffix`, else None."""
        directory, _, name = path.rpartition("/")
        if directory != self.state_dir and not directory.endswith(SERVER_DIR_SUFFIX):
            return None
        key = name.removesuffix(suffix)
        return key if name.endswith(suffix) and KEY_PATTERN.fullmatch(key) else None

    def _state_file(self, path: str) -> bool:
        """A file of the state directory that no helper reads: nothing of ours can be there (none writes it)."""
        directory = path.rpartition("/")[0]
        return directory == self.state_dir or directory.endswith(SERVER_DIR_SUFFIX)

    def _record(self, key: str) -> bytes | None:
        code, out, err = self.helper("rhl-inspect", key)
        if code == 0:
            self._remember(key, out)
            return out
        if NO_STATE in err:
            return None
        if "malformed JSON" in err or "must contain a JSON object" in err:
            return b""  # there, but not a record (e.g. half written)
        raise self._failed(f"rhl-inspect {key}", err)

    def _remember(self, key: str, raw: bytes) -> None:
        pid = (statefiles.decode(raw) or {}).get("pid")
        if isinstance(pid, int) and not isinstance(pid, bool):
            self._keys_by_pid[pid] = key

    def _log(self, key: str) -> bytes | None:
        code, out, err = self.helper("rhl-logs", key)
        if code == 0:
            return out
        if NO_LOG in err:
            return None
        raise self._failed(f"rhl-logs {key}", err)

    # ---- files ----
    def read(self, path: str) -> bytes | None:
        key = self._key(path, ".json")
        if key is not None:
            return self._record(key)
        key = self._key(path, ".log")
        if key is not None:
            data = self._log(key)
            return None if data is None else data[:statefiles.READ_LIMIT]
        if self._state_file(path):
            return None
        raise self.unable(f"read {path}")

    def mtime(self, path: str) -> float | None:
        """A status file's (rhl-inspect --with-mtime); None for anything else (no helper says)."""
        key = self._key(path, ".json")
        if key is None:
            return None
        code, out, err = self.helper("rhl-inspect", key, "--with-mtime")
        if code != 0:
            if NO_STATE in err:
                return None
            raise self._failed(f"rhl-inspect {key} --with-mtime", err)
        mtime = (statefiles.decode(out) or {}).get("mtime")
        return float(mtime) if isinstance(mtime, (int, float)) else None

    def write_atomic(self, path: str, data: bytes) -> None:
        raise self.unable(f"write {path}")

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """A launch lock is taken without a file: no helper writes one (the original launches unlocked)."""
        if self._key(path, ".lock") is not None:
            return True
        raise self.unable(f"create {path}")

    def rename(self, source: str, target: str) -> bool:
        return False  # only a stale lock is renamed, and there are none

    def remove(self, path: str) -> None:
        """A status file goes with rhl-rm; logs stay (no helper removes one), locks were never written."""
        key = self._key(path, ".json")
        if key is None:
            return
        code, _out, err = self.helper("rhl-rm", key, "--server")
        if code != 0:
            raise self._failed(f"rhl-rm {key} --server", err)

    def listdir(self, path: str) -> list[str]:
        if path != self.state_dir:
            return []
        code, out, err = self.helper("rhl-ps", "--key", "--no-status")
        if code != 0:
            raise self._failed("rhl-ps --key", err)
        return sorted(f"{key}.json" for key in out.decode(errors="replace").split() if KEY_PATTERN.fullmatch(key))

    def read_from(self, path: str, offset: int, limit: int | None = None) -> tuple[bytes, int] | None:
        key = self._key(path, ".log")
        data = self.read(path) if key is None else self._log(key)
        return None if data is None else read_from_bytes(data, offset, limit)

    # ---- processes ----
    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        """Sent as SSHHost sends it: the guard answers with its refusal (exit status 1)."""
        code, out, err = self.run(shlex.join(["sh", "-c", script, "sh", *args]), stdin)
        return ScriptResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def launch(self, request: Launch) -> ScriptResult:
        """rhl-launch-service: the guard's whitelist decides which program may run (the first word of a
        simple command); stdout is the PID it recorded. Its options are on its command line (the only way
        the guard lets them through), `file_parameters` too."""
        if request.ports:
            return ScriptResult(1, "", "rhl-launch-service cannot choose a port for a command reading {port}; "
                                       "give the service a port_start/port_end and let it report its own port")
        if request.setup:
            return ScriptResult(1, "", "rhl-launch-service runs no setup lines; drop 'setup' (the guard's "
                                       "environment is the administrator's to set)")
        words = shlex.split(request.command)
        if not words or any(SHELL_SYNTAX.fullmatch(word) for word in words):
            return ScriptResult(1, "", f"rhl-launch-service runs one program with arguments, not shell syntax: "
                                       f"{request.command[:120]!r}")
        argv = ["rhl-launch-service", "--key", request.key, "--workdir", request.workdir]
        if request.conda:
            argv += ["--conda-env", request.conda]
        record = request.record
        if isinstance(record.get("network_interface"), str):
            argv += ["--network-interface", record["network_interface"]]
        for option, field in (("--parameters", "parameters"), ("--meta", "meta")):
            if field in record:
                argv += [option, json.dumps(record[field])]
        code, _out, err = self.helper(*argv, "--", *words)
        if code != 0:
            return ScriptResult(code, "", err)
        raw = self._record(request.key)
        pid = (statefiles.decode(raw) or {}).get("pid") if raw else None
        return ScriptResult(0, str(pid), "") if isinstance(pid, int) else ScriptResult(1, "", "no PID recorded")

    def process_start_time(self, pid: int) -> str | None:
        """rhl-pid-alive: UNIDENTIFIED while the PID lives (no helper tells who it is), None once gone."""
        code, _out, err = self.helper("rhl-pid-alive", str(pid))
        if code not in (0, 1):
            raise self._failed(f"rhl-pid-alive {pid}", err)
        return UNIDENTIFIED if code == 0 else None

    def listens(self, pid: int, port: int) -> bool | None:
        return None  # no helper says who listens on a port

    def listening_ports(self, pid: int) -> list[int] | None:
        return None

    def signal_group(self, pid: int, signal: str) -> bool:
        """rhl-stop of the key whose record names `pid` (it sends SIGINT, SIGTERM, then SIGKILL, and marks
        the record stale)."""
        key = self._keys_by_pid.get(pid) or self._key_of(pid)
        if key is None:
            return False
        code, _out, err = self.helper("rhl-stop", key)
        if code != 0:
            raise self._failed(f"rhl-stop {key}", err)
        return True

    def _key_of(self, pid: int) -> str | None:
        code, out, err = self.helper("rhl-ps", "--json", "--no-status")
        if code != 0:
            raise self._failed("rhl-ps --json", err)
        for line in out.decode(errors="replace").splitlines():
            row: Any = statefiles.decode(line.encode())
            if row is not None and row.get("pid") == pid and isinstance(row.get("key"), str):
                return str(row["key"])
        return None

    # ---- TCP as seen from the host ----
    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        return self.connection.forward(host, port, timeout)


__all__ = ["GuardedHost", "refusal_of"]
