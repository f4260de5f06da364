"""Real OpenSSH servers for the test suite, as a pytest plugin module.

Why real sshd: the launcher drives remote hosts through paramiko, and only a
real OpenSSH server exercises host-key checks, auth, exec, SFTP and
direct-tcpip forwarding the way production hosts do.

Use it with ``pytest_plugins = ["tests.sshd"]`` (in the top-level conftest or
a test module).  Fixtures (all session-scoped):

* ``sshd``      -- the target server.  When root may create network
  namespaces it runs inside its own namespace (``rhl-<hex>``) joined to the
  host by a veth pair on a random /30 of 10.241.0.0/16, so a service bound to
  127.0.0.1 "on the remote host" is reachable only through SSH.  Otherwise
  (or with ``RHL_TEST_NO_NETNS=1``) it listens on 127.0.0.1 on a free port.
* ``jump_sshd`` -- a second server on 127.0.0.1 in the host namespace, for
  ProxyJump tests; it can reach ``sshd.host``.
* ``sshd_account`` -- the throwaway Unix user both servers log in as.

Everything (servers, user, namespace, veth, temp dirs) is removed at session
end.  Without root or /usr/sbin/sshd the fixtures skip loudly; with
``CI=true`` they fail instead, so CI cannot silently skip SSH tests.
"""

from __future__ import annotations

import atexit
import base64
import ipaddress
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import paramiko
import pytest

SSHD_BIN = "/usr/sbin/sshd"
# PATH the test user gets from run(); matches what Debian's sshd gives sessions.
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
NO_NETNS_ENV = "RHL_TEST_NO_NETNS"
NETNS_SUPERNET = ipaddress.IPv4Network("10.241.0.0/16")
START_TIMEOUT = 15.0
_REQUIRED_TOOLS = ("ssh-keygen", "useradd", "userdel", "chpasswd", "setpriv")


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> NoReturn:
    """Skip locally but fail in CI: a silently skipped SSH suite proves nothing."""
    msg = f"REAL SSHD TEST SERVER UNAVAILABLE: {reason}"
    if _in_ci():
        pytest.fail(msg + " [CI=true, so failing instead of skipping]", pytrace=False)
    pytest.skip(msg)


def _sh(args: list[str], *, input: str | None = None) -> str:
    """Run a setup command, raising with its stderr so fixture errors are legible."""
    proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc.stdout


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _known_hosts_name(host: str, port: int) -> str:
    """Host pattern exactly as OpenSSH writes it to known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def _sshd_procs() -> list[tuple[int, int, int]]:
    """(pid, ppid, session id) of every process whose comm is ``sshd``."""
    out: list[tuple[int, int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if comm == "sshd":
            out.append((int(entry.name), int(fields[1]), int(fields[3])))
    return out


def _connection_pids(listener: int) -> set[int]:
    """sshd processes serving the listener's connections.

    Each connection's monitor is a child of the listener and leads its own
    session; its privsep child may be forked a moment later (or orphaned),
    so it is found by session id rather than by parentage.
    """
    procs = _sshd_procs()
    monitors = {pid for pid, ppid, _ in procs if ppid == listener}
    return monitors | {pid for pid, _, sid in procs if sid in monitors}


def _pids_of_uid(uid: int, netns_inode: int | None = None) -> list[int]:
    """Processes owned by ``uid`` (optionally only those in one net namespace)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            if netns_inode is not None and os.stat(entry / "ns" / "net").st_ino != netns_inode:
                continue
        except OSError:
            continue
        pids.append(int(entry.name))
    return pids


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_uid(uid: int, netns_inode: int | None = None) -> None:
    """Kill the test user's leftovers (e.g. setsid'd services) so userdel/netns del succeed."""
    for _ in range(50):
        pids = _pids_of_uid(uid, netns_inode)
        if not pids:
            return
        _kill_pids(pids)
        time.sleep(0.1)


def _ensure_privsep_dir() -> None:
    """sshd (even ``sshd -t``) refuses to run without its privilege-separation dir."""
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)


def _sshd_version() -> tuple[int, int]:
    proc = subprocess.run([SSHD_BIN, "-V"], capture_output=True, text=True, timeout=10)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stdout + proc.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        _unavailable("tests/sshd.py needs root (useradd, a real sshd, network namespaces)")
    if not os.access(SSHD_BIN, os.X_OK):
        _unavailable(f"{SSHD_BIN} not found: apt-get install -y openssh-server")
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        _unavailable(f"missing tools: {', '.join(missing)}")


# --------------------------------------------------------------------------
# the test user
# --------------------------------------------------------------------------


@dataclass
class SSHAccount:
    """Throwaway Unix user + client key shared by every server of the session."""

    name: str
    uid: int
    gid: int
    home: Path
    password: str
    client_key: Path
    authorized_keys: Path
    base: Path  # root of this session's temp tree (0755 so sshd-as-user can read keys)
    python: str = ""
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def create(cls) -> SSHAccount:
        name = f"rhltest{secrets.token_hex(4)}"
        base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
        try:
            base.chmod(0o755)
            home = base / "home"
            home.mkdir()
            keys = base / "keys"
            keys.mkdir(mode=0o755)
            client_key = keys / "client_ed25519"
            _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-client", "-f", str(client_key)])
            authorized_keys = keys / "authorized_keys"
            authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
            authorized_keys.chmod(0o644)  # sshd reads it with the user's privileges
            # -l: no lastlog/faillog entries; the home exists already (we set its mode).
            _sh(["useradd", "-M", "-l", "-U", "-d", str(home), "-s", "/bin/sh", name])
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        pw = pwd.getpwnam(name)
        password = secrets.token_urlsafe(12)
        account = cls(name, pw.pw_uid, pw.pw_gid, home, password, client_key, authorized_keys, base)
        atexit.register(account.close)
        try:
            os.chown(home, pw.pw_uid, pw.pw_gid)
            home.chmod(0o700)
            # Also unlocks the account: sshd without PAM refuses '!' (locked) users.
            _sh(["chpasswd"], input=f"{name}:{password}\n")
            account.python = account._find_python()
        except BaseException:
            account.close()
            raise
        return account

    def user_env(self) -> dict[str, str]:
        """A login-like environment, so run() does not leak root's PATH (pyenv shims)."""
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/sh",
            "PATH": USER_PATH,
            "LANG": "C.UTF-8",
        }

    def command(self, cmd: str, netns: str | None = None) -> list[str]:
        """argv running ``sh -c cmd`` as this user, optionally inside ``netns``."""
        argv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", "/bin/sh", "-c", cmd]
        return ["ip", "netns", "exec", netns, *argv] if netns else argv

    def run(
        self, cmd: str, netns: str | None = None, *, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(cmd, netns),
            capture_output=True,
            text=True,
            env=self.user_env(),
            cwd=self.home,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def _find_python(self) -> str:
        """The python3 an SSH session of this user gets; /root/.pyenv is not reachable."""
        probe = self.run("python3 -c 'import http.server, json, sys; print(sys.executable)'")
        if probe.returncode != 0 or not probe.stdout.strip():
            _unavailable(
                "no python3 runnable by an unprivileged user on PATH "
                f"{USER_PATH} (root's /root/.pyenv is not readable by other users): "
                "apt-get install -y python3\n" + probe.stderr
            )
        return probe.stdout.strip()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _kill_uid(self.uid)
        for _ in range(10):
            if subprocess.run(["userdel", self.name], capture_output=True).returncode in (0, 6):
                break  # 6: user already gone
            _kill_uid(self.uid)
            time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------
# network namespace
# --------------------------------------------------------------------------


@dataclass
class NetNamespace:
    """A namespace joined to the host by a veth pair on a private /30.

    An ``unreachable`` guard route for the /30 (behind the connected route)
    guarantees that traffic for the namespace never falls through to the
    host's default route, whatever state the veth is in: the network rule
    allows only loopback and our own namespaces as targets.
    """

    name: str
    host_if: str
    ns_if: str
    subnet: ipaddress.IPv4Network
    host_addr: str
    ns_addr: str
    _closed: bool = field(default=False, repr=False)

    GUARD_METRIC = 4242

    @classmethod
    def create(cls) -> NetNamespace:
        token = secrets.token_hex(3)
        subnet = cls._pick_subnet()
        host_addr, ns_addr = (str(a) for a in list(subnet.hosts())[:2])
        ns = cls(f"rhl-{token}", f"rhl{token}h", f"rhl{token}n", subnet, host_addr, ns_addr)
        _sh(["ip", "route", "add", "unreachable", str(subnet), "metric", str(cls.GUARD_METRIC)])
        atexit.register(ns.close)
        try:
            _sh(["ip", "netns", "add", ns.name])
            _sh(["ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if, "netns", ns.name])
            _sh(["ip", "addr", "add", f"{host_addr}/30", "dev", ns.host_if])
            _sh(["ip", "link", "set", ns.host_if, "up"])
            ns._in_ns(["ip", "link", "set", "lo", "up"])
            ns._in_ns(["ip", "addr", "add", f"{ns_addr}/30", "dev", ns.ns_if])
            ns._in_ns(["ip", "link", "set", ns.ns_if, "up"])
        except BaseException:
            ns.close()
            raise
        return ns

    def _in_ns(self, argv: list[str]) -> str:
        return _sh(["ip", "netns", "exec", self.name, *argv])

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        """A random /30 nothing on the host uses yet, so concurrent runs don't clash."""
        used = _sh(["ip", "-4", "-o", "addr", "show"]) + _sh(["ip", "-4", "route", "show"])
        subnets = list(NETNS_SUPERNET.subnets(new_prefix=30))
        for _ in range(100):
            subnet = random.choice(subnets[1:-1])
            if not any(str(addr) in used for addr in subnet):
                return subnet
        raise RuntimeError(f"no free /30 in {NETNS_SUPERNET}")

    @property
    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino

    def set_link(self, up: bool) -> None:
        """Down/up the namespace end: packets to it are then silently dropped."""
        self._in_ns(["ip", "link", "set", self.ns_if, "up" if up else "down"])
        route = _sh(["ip", "-4", "route", "get", self.ns_addr])
        if f"dev {self.host_if}" not in route and not route.startswith("unreachable"):
            self._in_ns(["ip", "link", "set", self.ns_if, "up"])
            raise RuntimeError(f"traffic for {self.ns_addr} would leave the host: {route}")

    def close(self, uid: int | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if uid is not None:
            try:
                _kill_uid(uid, self.inode)
            except OSError:
                pass
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(
            ["ip", "route", "del", "unreachable", str(self.subnet), "metric", str(self.GUARD_METRIC)],
            capture_output=True,
        )

    @staticmethod
    def try_create() -> NetNamespace | None:
        if os.environ.get(NO_NETNS_ENV, "").strip() not in {"", "0"}:
            return None
        try:
            return NetNamespace.create()
        except (RuntimeError, OSError) as exc:
            warnings.warn(f"network namespace unavailable, sshd falls back to 127.0.0.1: {exc}", stacklevel=2)
            return None


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------


@dataclass
class SSHServer:
    """A running OpenSSH server plus everything a client needs to reach it."""

    host: str
    port: int
    user: str
    home: Path
    client_key: Path
    password: str
    host_key_line: str  # "[host]:port ssh-ed25519 AAAA..." as in known_hosts
    host_pubkey: paramiko.PKey
    netns: str | None
    python: str  # python3 the test user runs (a session's PATH resolves python3 to it)
    config_path: Path
    log_path: Path
    _account: SSHAccount = field(repr=False)
    _ns: NetNamespace | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # ----- client side helpers -----

    def write_ssh_config(self, client_home: Path, alias: str = "testhost", extra: dict[str, str] | None = None) -> Path:
        """Append a ``Host alias`` block to client_home/.ssh/config and trust our host key.

        Appends, so calling it for ``sshd`` and ``jump_sshd`` on the same home
        yields one config with both aliases (e.g. ``extra={"ProxyJump": "jump"}``).
        ``extra`` entries override the defaults (case-insensitively).
        """
        ssh_dir = Path(client_home) / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        known_hosts = ssh_dir / "known_hosts"
        options: dict[str, tuple[str, str]] = {}
        defaults = {
            "HostName": self.host,
            "Port": str(self.port),
            "User": self.user,
            "IdentityFile": str(self.client_key),
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": str(known_hosts),
            "StrictHostKeyChecking": "yes",
        }
        for key, value in {**defaults, **(extra or {})}.items():
            options[key.lower()] = (key, str(value))
        block = f"Host {alias}\n" + "".join(f"    {k} {v}\n" for k, v in options.values())
        config = ssh_dir / "config"
        old = config.read_text() if config.exists() else ""
        config.write_text(old + ("\n" if old and not old.endswith("\n") else "") + block)
        config.chmod(0o600)  # OpenSSH rejects group/world-writable configs
        known = known_hosts.read_text() if known_hosts.exists() else ""
        if self.host_key_line not in known.splitlines():
            known_hosts.write_text(known + self.host_key_line + "\n")
        known_hosts.chmod(0o600)
        return config

    def connect(self, timeout: float = 10.0, **kwargs: Any) -> paramiko.SSHClient:
        """A paramiko client logged in with the key, host key strictly verified."""
        client = paramiko.SSHClient()
        key = self.host_pubkey
        client.get_host_keys().add(_known_hosts_name(self.host, self.port), key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        params: dict[str, Any] = {
            "username": self.user,
            "key_filename": str(self.client_key),
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
        }
        params.update(kwargs)
        client.connect(self.host, port=self.port, **params)
        return client

    # ----- server side helpers -----

    def run(self, cmd: str, *, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``sh -c cmd`` as the test user in the server's namespace (output captured).

        To leave a process running, detach it fully, e.g.
        ``setsid nohup python3 srv.py >/dev/null 2>&1 &`` -- anything holding
        stdout open makes this call wait for it.
        """
        return self._account.run(cmd, self.netns, timeout=timeout, check=check)

    def log_text(self) -> str:
        """sshd's VERBOSE log, for assertion messages and debugging."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start sshd (same config, port and host key) and wait until it greets."""
        if self.is_running():
            return
        _ensure_privsep_dir()
        argv = [SSHD_BIN, "-D", "-f", str(self.config_path), "-E", str(self.log_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # ip execs sshd: same pid
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"sshd exited during startup: {err}\n--- log ---\n{self.log_text()}")
            if self._greets():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not greet on {self.host}:{self.port}\n--- log ---\n{self.log_text()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def stop(self, drop_connections: bool = True) -> None:
        """Stop sshd, by default also killing its per-connection children.

        Dropping connections makes stop() look like a link cut to clients;
        the test user's own processes (e.g. a setsid'd service) survive.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)  # no new connections while we look
            victims: set[int] = set()
            # Freeze until no new process shows up: a monitor may be mid-fork.
            for _ in range(50 if drop_connections else 0):
                new = _connection_pids(proc.pid) - victims
                if not new:
                    break
                for pid in new:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                    except ProcessLookupError:
                        pass
                victims |= new
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            _kill_pids(sorted(victims))
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def set_link(self, up: bool) -> None:
        """Cut/restore the server's link: packets vanish silently (no RST), unlike stop()."""
        if self._ns is None:
            raise RuntimeError("set_link needs a network namespace (sshd.netns is None)")
        self._ns.set_link(up)

    def close(self) -> None:
        self.stop()
        if self._ns is not None:
            self._ns.close(uid=self._account.uid)


def _write_sshd_config(path: Path, *, host: str, port: int, host_key: Path, account: SSHAccount) -> None:
    lines = [
        "# Throwaway sshd config written by tests/sshd.py for one pytest session.",
        f"Port {port}",
        f"ListenAddress {host}",
        "AddressFamily inet",
        f"HostKey {host_key}",
        f"PidFile {path.parent / 'sshd.pid'}",
        f"AuthorizedKeysFile {account.authorized_keys}",
        f"AllowUsers {account.name}",  # password auth is on: admit nobody else
        "PermitRootLogin no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication yes",
        "PermitEmptyPasswords no",
        "StrictModes no",  # our key files live under /tmp (world-writable parent)
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "GatewayPorts no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "MaxStartups 100:30:200",  # tests open many connections quickly
        "MaxSessions 64",
        "MaxAuthTries 10",
        "LoginGraceTime 30",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if _sshd_version() >= (9, 8):
        lines.append("PerSourcePenalties no")  # failed-auth tests must not lock out 127.0.0.1
    path.write_text("\n".join(lines) + "\n")


def launch_sshd(account: SSHAccount, label: str, ns: NetNamespace | None = None) -> SSHServer:
    """Generate a host key and config under account.base/label and start sshd."""
    workdir = account.base / label
    workdir.mkdir(mode=0o755)
    host_key = workdir / "ssh_host_ed25519_key"
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(host_key)])
    key_type, key_b64 = Path(f"{host_key}.pub").read_text().split()[:2]
    host_pubkey = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    config = workdir / "sshd_config"
    attempts = 1 if ns else 5  # a free loopback port can be raced; a fresh netns cannot
    for attempt in range(attempts):
        host = ns.ns_addr if ns else "127.0.0.1"
        port = random.randint(20000, 60000) if ns else _free_loopback_port()
        _write_sshd_config(config, host=host, port=port, host_key=host_key, account=account)
        _ensure_privsep_dir()
        _sh([SSHD_BIN, "-t", "-f", str(config)])
        server = SSHServer(
            host=host,
            port=port,
            user=account.name,
            home=account.home,
            client_key=account.client_key,
            password=account.password,
            host_key_line=f"{_known_hosts_name(host, port)} {key_type} {key_b64}",
            host_pubkey=host_pubkey,
            netns=ns.name if ns else None,
            python=account.python,
            config_path=config,
            log_path=workdir / "sshd.log",
            _account=account,
            _ns=ns,
        )
        try:
            server.start()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            continue
        atexit.register(server.close)
        return server
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------
# pytest fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd_account() -> Iterator[SSHAccount]:
    """The session's throwaway user; removed (with its processes) at the end."""
    _check_prerequisites()
    account = SSHAccount.create()
    try:
        yield account
    finally:
        account.close()


@pytest.fixture(scope="session")
def sshd(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    """Target sshd, in its own network namespace when possible (see module doc)."""
    ns = NetNamespace.try_create()
    try:
        server = launch_sshd(sshd_account, "target", ns)
    except BaseException:
        if ns is not None:
            ns.close(uid=sshd_account.uid)
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def jump_sshd(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    """Bastion sshd on 127.0.0.1 in the host namespace (reaches ``sshd.host``)."""
    server = launch_sshd(sshd_account, "jump")
    try:
        yield server
    finally:
        server.close()
