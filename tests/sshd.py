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
* ``sshd_account`` -- the throwaway Unix user all servers log in as.
* ``sshd_2fa``  -- a 2-factor host: keyboard-interactive through PAM asks for
  the password (pam_unix), then a TOTP code (pam_oath); ``sshd_2fa.totp()``
  gives a code it accepts.  ``sshd_password`` -- the same through PAM with
  the password alone (one prompt).  Both are PamSSHServer (an SSHServer), in a
  namespace of their own like ``sshd``, and run sshd under a PAM service of
  their own, never /etc/pam.d/sshd (see "PAM servers" below).  They install
  libpam-oath and oathtool with apt-get when missing.
* ``sshd_cert`` -- a host accepting only user certificates signed by its own
  test CA (no authorized keys, no passwords); ``sshd_cert.certify(path)``
  writes a certificate of the client key (principals and validity chosen).

Everything (servers, user, namespace, veth, temp dirs, PAM files) is removed
at session end.  Without root or /usr/sbin/sshd the fixtures skip loudly; with
``CI=true`` they fail instead, so CI cannot silently skip SSH tests.
"""

from __future__ import annotations

import atexit
import base64
import glob
import ipaddress
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import paramiko
import pytest
from paramiko.auth_strategy import AuthSource, AuthStrategy

from tests.posix import SIGKILL, SIGSTOP, chown, fcntl, geteuid, pwd  # also in the POSIX-stripped run

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


def _sshd_procs(comm: str = "sshd") -> list[tuple[int, int, int]]:
    """(pid, ppid, session id) of every process whose comm is ``comm`` (sshd started as ``comm``)."""
    out: list[tuple[int, int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if name == comm:
            out.append((int(entry.name), int(fields[1]), int(fields[3])))
    return out


def _connection_pids(listener: int, comm: str = "sshd") -> set[int]:
    """sshd processes serving the listener's connections.

    Each connection's monitor is a child of the listener and leads its own
    session; its privsep child may be forked a moment later (or orphaned),
    so it is found by session id rather than by parentage.
    """
    procs = _sshd_procs(comm)
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
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass


def kill_uid(uid: int, netns_inode: int | None = None) -> None:
    """Kill a test user's leftovers (e.g. setsid'd services) so userdel/netns del succeed."""
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
    if geteuid() != 0:
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
            chown(home, pw.pw_uid, pw.pw_gid)
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
        kill_uid(self.uid)
        for _ in range(10):
            if subprocess.run(["userdel", self.name], capture_output=True).returncode in (0, 6):
                break  # 6: user already gone
            kill_uid(self.uid)
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
                kill_uid(uid, self.inode)
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
    # The program sshd is started as: a symlink to SSHD_BIN gives it another name (and so
    # another PAM service, see launch_pam_sshd); its processes' comm is that name.
    sshd_bin: str = SSHD_BIN
    env: dict[str, str] = field(default_factory=dict)  # added to sshd's environment (e.g. KRB5_KTNAME)

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
            # Debian's /etc/ssh/ssh_config says yes for every host (CLI subprocesses read it): not these servers
            "GSSAPIAuthentication": "no",
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
        """A paramiko client logged in (`login_options`), host key strictly verified."""
        client = paramiko.SSHClient()
        key = self.host_pubkey
        client.get_host_keys().add(_known_hosts_name(self.host, self.port), key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        params: dict[str, Any] = {
            "username": self.user,
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            **self.login_options(),
        }
        params.update(kwargs)
        client.connect(self.host, port=self.port, **params)
        return client

    def login_options(self) -> dict[str, Any]:
        """How `connect` logs in: with the client key."""
        return {"key_filename": str(self.client_key)}

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
        argv = [self.sshd_bin, "-D", "-f", str(self.config_path), "-E", str(self.log_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # ip execs sshd: same pid
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={**os.environ, **self.env})
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
            os.kill(proc.pid, SIGSTOP)  # no new connections while we look
            victims: set[int] = set()
            # Freeze until no new process shows up: a monitor may be mid-fork.
            for _ in range(50 if drop_connections else 0):
                new = _connection_pids(proc.pid, Path(self.sshd_bin).name[:15]) - victims
                if not new:
                    break
                for pid in new:
                    try:
                        os.kill(pid, SIGSTOP)
                    except ProcessLookupError:
                        pass
                victims |= new
                time.sleep(0.02)
            os.kill(proc.pid, SIGKILL)
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


def _write_sshd_config(
    path: Path, *, host: str, port: int, host_key: Path, account: SSHAccount, overrides: dict[str, str] | None = None
) -> None:
    """Write the config; ``overrides`` replace same-named keywords (case-insensitively) or are appended."""
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
    for keyword, value in (overrides or {}).items():
        same = [i for i, line in enumerate(lines) if line.split(" ", 1)[0].lower() == keyword.lower()]
        for i in reversed(same):
            del lines[i]
        lines.append(f"{keyword} {value}")
    path.write_text("\n".join(lines) + "\n")


def launch_sshd(
    account: SSHAccount,
    label: str,
    ns: NetNamespace | None = None,
    *,
    sshd_bin: str = SSHD_BIN,
    config_overrides: dict[str, str] | None = None,
    server_type: type[SSHServer] | None = None,
    host_key_type: str = "ed25519",
    **server_fields: Any,
) -> SSHServer:
    """Generate a host key and config under account.base/label and start sshd.

    The keyword arguments serve the PAM servers (launch_pam_sshd): the program
    sshd runs as, sshd_config keywords to replace or add, and an SSHServer
    subclass with its extra fields. `host_key_type` (ssh-keygen -t) is the
    server's only host key.
    """
    workdir = account.base / label
    workdir.mkdir(mode=0o755)
    host_key = workdir / f"ssh_host_{host_key_type}_key"
    _sh(["ssh-keygen", "-q", "-t", host_key_type, "-N", "", "-C", "", "-f", str(host_key)])
    key_type, key_b64 = Path(f"{host_key}.pub").read_text().split()[:2]
    host_pubkey = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    config = workdir / "sshd_config"
    attempts = 1 if ns else 5  # a free loopback port can be raced; a fresh netns cannot
    for attempt in range(attempts):
        host = ns.ns_addr if ns else "127.0.0.1"
        port = random.randint(20000, 60000) if ns else _free_loopback_port()
        _write_sshd_config(config, host=host, port=port, host_key=host_key, account=account,
                           overrides=config_overrides)
        _ensure_privsep_dir()
        _sh([sshd_bin, "-t", "-f", str(config)])
        server = (server_type or SSHServer)(
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
            sshd_bin=sshd_bin,
            **server_fields,
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
# PAM servers: password (pam_unix), then a TOTP code (pam_oath)
# --------------------------------------------------------------------------
#
# OpenSSH names its PAM service after its program name: auth-pam.h has
# ``#define SSHD_PAM_SERVICE __progname`` unless the build overrides it, and
# Debian 12's 9.2 does not (proven by tests/test_pam_harness.py: the OTP prompt
# only comes from our own PAM file).  So each PAM server runs sshd through a
# symlink named after its own service, ``rhl-2fa-<hex>`` or ``rhl-pw-<hex>``,
# and /etc/pam.d/<that name> is ours; /etc/pam.d/sshd is never touched.
# Re-exec keeps the name (sshd re-execs argv[0], which must be absolute).  Newer
# OpenSSH (servconf.c's pam_service_name, default "sshd" whatever the program
# name) has a ``PAMServiceName`` keyword instead; it is set whenever this sshd
# knows it, so the harness works on both.  Linux-PAM itself has no private
# config directory for one process (only pam_start_confdir(), which sshd does
# not call), hence the files under /etc/pam.d.
#
# Names carry a random suffix so concurrent pytest sessions never share a PAM
# file; /etc/rhl-test-oath/<service>/ holds the owner (pid + start time) and
# the OATH users file.  Each session removes its own files at the end (also on
# failure, and at exit) and sweeps those of sessions that died (SIGKILL).

OATH_APT_PACKAGES = ("libpam-oath", "oathtool")
PAM_D = Path("/etc/pam.d")
PAM_STATE_DIR = Path("/etc/rhl-test-oath")
_PAM_SERVICE_RE = re.compile(r"rhl-(?:2fa|pw)-[0-9a-f]{6}")
_PAM_MODULE_DIRS = (
    "/lib/*/security", "/usr/lib/*/security", "/lib/security", "/usr/lib/security", "/lib64/security",
    "/usr/lib64/security",
)
OATH_WINDOW = 3  # pam_oath window=: codes of 3 steps (90 s) before and after the server's current one pass
TOTP_STEP = 30
TOTP_MIN_REMAINING = 3.0  # seconds: totp() never hands out a code that expires sooner than this
PASSWORD_PROMPT = "Password: "  # pam_unix's prompt (Linux-PAM's default for the password)
OTP_PROMPT = "One-time password (OATH) for `{user}': "  # pam_oath's, with the login name


def _pam_module_exists(name: str) -> bool:
    return any(Path(d, name).exists() for pattern in _PAM_MODULE_DIRS for d in glob.glob(pattern))


def _ensure_oath_packages() -> None:
    """pam_oath.so and oathtool, installed with apt-get when missing (root only)."""
    if _pam_module_exists("pam_oath.so") and shutil.which("oathtool"):
        return
    if geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable(f"pam_oath.so or oathtool missing and cannot be installed here (needs root and apt-get): "
                     f"apt-get install -y {' '.join(OATH_APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
               *OATH_APT_PACKAGES]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=300"], capture_output=True,
                       env=env, timeout=900)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0 or not _pam_module_exists("pam_oath.so") or not shutil.which("oathtool"):
        _unavailable(f"installing {' '.join(OATH_APT_PACKAGES)} failed: {(proc.stdout + proc.stderr).strip()[-2000:]}")


def _pam_prerequisites() -> None:
    if not _pam_module_exists("pam_unix.so"):
        _unavailable("pam_unix.so not found (Debian: libpam-modules)")
    _ensure_oath_packages()


def _sshd_knows_pam_service_name() -> bool:
    """True when this sshd has the ``PAMServiceName`` keyword (newer OpenSSH; 9.2 does not)."""
    proc = subprocess.run([SSHD_BIN, "-t", "-f", "/dev/null", "-o", "PAMServiceName=probe"],
                          capture_output=True, text=True, timeout=10)
    return "pamservicename" not in (proc.stdout + proc.stderr).lower()


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]  # field 22: start time in clock ticks since boot


def _owner_alive(owner: str) -> bool:
    try:
        pid_text, start = owner.split()
        return _proc_start_time(int(pid_text)) == start
    except ValueError:
        return False


def _remove_pam_service(service: str, link: Path | None = None) -> None:
    """Remove one service's PAM file, state dir and symlink (the PAM file first: it never outlives its record)."""
    (PAM_D / service).unlink(missing_ok=True)
    shutil.rmtree(PAM_STATE_DIR / service, ignore_errors=True)
    if link is not None:
        link.unlink(missing_ok=True)
    try:
        PAM_STATE_DIR.rmdir()  # only when no other session has a server registered
    except OSError:
        pass


def sweep_stale_pam_services() -> list[str]:
    """Remove PAM files and OATH state left by pytest sessions that died; returns the services removed."""
    removed: list[str] = []
    if PAM_STATE_DIR.is_dir():
        for state in PAM_STATE_DIR.iterdir():
            if state.name.startswith(".tmp-"):  # a registration cut short (renamed into place when complete)
                owner_file = state / "owner"
                if not owner_file.exists() or not _owner_alive(owner_file.read_text()):
                    shutil.rmtree(state, ignore_errors=True)
                continue
            if not _PAM_SERVICE_RE.fullmatch(state.name):
                continue
            try:
                owner = (state / "owner").read_text()
            except OSError:
                owner = ""
            if not _owner_alive(owner):
                _remove_pam_service(state.name)
                removed.append(state.name)
    for pam_file in PAM_D.glob("rhl-*"):
        if _PAM_SERVICE_RE.fullmatch(pam_file.name) and not (PAM_STATE_DIR / pam_file.name).exists():
            pam_file.unlink(missing_ok=True)  # registered first, removed last: an orphan is always stale
            removed.append(pam_file.name)
    return removed


def _register_pam_service(service: str) -> Path:
    """/etc/rhl-test-oath/<service>/ (0700) with our owner record, created complete in one rename."""
    tmp = PAM_STATE_DIR / f".tmp-{service}"
    for attempt in range(5):
        PAM_STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        try:
            tmp.mkdir(mode=0o700)
            break
        except FileNotFoundError:  # another session's cleanup removed the (empty) parent just now
            if attempt == 4:
                raise
    PAM_STATE_DIR.chmod(0o700)
    (tmp / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}")
    state = PAM_STATE_DIR / service
    tmp.rename(state)
    return state


def _pam_file_text(service: str, link: Path, users_file: Path | None, window: int) -> str:
    lines = [
        "#%PAM-1.0",
        f"# Throwaway PAM service of a test sshd started by tests/sshd.py as {link}",
        "# (OpenSSH uses its program name as the PAM service); removed when the pytest session ends.",
        # requisite: a wrong password fails at once, without asking for a code
        "auth     requisite  pam_unix.so nodelay" if users_file else "auth     required   pam_unix.so nodelay",
    ]
    if users_file:
        lines.append(f"auth     required   pam_oath.so usersfile={users_file} window={window} digits=6")
    lines += [
        "account  required   pam_unix.so",
        "session  required   pam_permit.so",
        "password required   pam_deny.so",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class OathToken:
    """The test user's TOTP token (RFC 6238, SHA1, 6 digits, 30 s) as pam_oath checks it.

    pam_oath (liboath's usersfile) accepts a code of any step within
    ``window`` steps of the server's current one, and after each success
    records the code (fields 5-7 of the user's line).  It refuses, as a
    replay, the recorded code itself and any code of a step not later than the
    recorded one's.  So a second login in the same 30 s needs a *later* step's
    code: ``code()`` reads the record and hands out the first step after it
    (the current step when nothing is recorded), up to ``window`` steps ahead.
    When all are used (more than window + 1 logins within 30 s) it clears the
    record, as re-provisioning the token would (``forget_used_codes``), and
    hands out the current code; with ``reset=False`` it waits for the next step
    instead.  Only a code that could expire within ``min_remaining`` seconds
    (possible only with window 0) makes it wait for the next step.
    """

    user: str
    secret_hex: str
    users_file: Path
    window: int = OATH_WINDOW
    step_seconds: int = TOTP_STEP
    clock: Callable[[], float] = field(default=time.time, repr=False)  # replaceable in unit tests
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def line(self) -> str:
        return f"HOTP/T{self.step_seconds} {self.user} - {self.secret_hex}\n"

    def codes(self, first_step: int, count: int) -> list[str]:
        """The codes of ``count`` steps from ``first_step`` on, by oathtool."""
        out = _sh(["oathtool", "--totp", f"--time-step-size={self.step_seconds}s",
                   f"--now=@{first_step * self.step_seconds}", f"--window={count - 1}", self.secret_hex])
        codes = out.split()
        if len(codes) != count:
            raise RuntimeError(f"oathtool printed {codes!r}, wanted {count} codes")
        return codes

    def code_at(self, step: int) -> str:
        return self.codes(step, 1)[0]

    def now(self) -> tuple[int, float]:
        """(current step, seconds left in it)."""
        t = self.clock()
        step = int(t // self.step_seconds)
        return step, (step + 1) * self.step_seconds - t

    def current(self) -> str:
        """``oathtool --totp <secret>``: the current step's code, whether or not it was used."""
        return _sh(["oathtool", "--totp", f"--time-step-size={self.step_seconds}s", self.secret_hex]).strip()

    def last_used(self) -> str | None:
        """The code pam_oath recorded at the last successful login (None before any, or after a reset)."""
        for line in self.users_file.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[1] == self.user:
                return fields[5]
        return None

    def forget_used_codes(self) -> None:
        """Clear pam_oath's replay record (the user's line back to 4 fields), under liboath's lock file."""
        lock_path = Path(f"{self.users_file}.lock")
        with open(lock_path, "w") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)  # fcntl(F_SETLKW), as liboath's update_usersfile takes it
            try:
                kept = [line + "\n" for line in self.users_file.read_text().splitlines()
                        if line.split()[1:2] != [self.user]]
                tmp = self.users_file.with_name(self.users_file.name + ".rhl-reset")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write("".join(kept) + self.line())
                tmp.replace(self.users_file)
            finally:
                lock_path.unlink(missing_ok=True)

    def code(self, *, min_remaining: float = TOTP_MIN_REMAINING, reset: bool = True) -> str:
        """A code pam_oath accepts for the next login (see the class doc); one per login."""
        w = self.window
        while True:
            step, remaining = self.now()
            first = step - w - 1  # one step of margin each side for the server's clock moving on
            by_step = dict(zip(range(first, step + w + 2), self.codes(first, 2 * w + 3), strict=True))
            last = self.last_used()
            floor = max((s for s, c in by_step.items() if c == last), default=step - 1) + 1
            candidates = [s for s in range(max(step, floor), step + w + 1) if by_step[s] != last]
            if not candidates:
                if reset:
                    self.forget_used_codes()
                    continue
                self.sleep(remaining + 0.05)  # the window moves on by one step
                continue
            chosen = candidates[0]
            if chosen + w <= step and remaining < min_remaining:  # would expire in a moment (window 0)
                self.sleep(remaining + 0.05)
                continue
            return by_step[chosen]


class _KeyboardInteractive(AuthSource):
    """paramiko AuthSource: one keyboard-interactive request answered by ``handler``."""

    def __init__(self, username: str, handler: Callable[[str, str, list[tuple[str, bool]]], list[str]]) -> None:
        super().__init__(username)
        self.handler = handler

    def authenticate(self, transport: paramiko.Transport) -> list[str]:
        return transport.auth_interactive(self.username, self.handler)


class _OneSource(AuthStrategy):
    def __init__(self, source: AuthSource) -> None:
        super().__init__(paramiko.SSHConfig())
        self.source = source

    def get_sources(self) -> Iterator[AuthSource]:
        yield self.source


@dataclass
class PamSSHServer(SSHServer):
    """An sshd that logs in through PAM: ``kind`` "2fa" (password, then a TOTP code) or "password".

    Only keyboard-interactive is offered on the 2FA host; the password host
    also accepts the "password" method.  No public keys on either.
    """

    kind: str = "2fa"
    pam_service: str = ""
    pam_file: Path | None = None
    oath: OathToken | None = None
    _pam_closed: bool = field(default=False, repr=False)

    @property
    def password_prompt(self) -> str:
        return PASSWORD_PROMPT

    @property
    def otp_prompt(self) -> str:
        return OTP_PROMPT.format(user=self.user)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The keyboard-interactive prompts of one login, in order."""
        return (self.password_prompt, self.otp_prompt) if self.oath else (self.password_prompt,)

    def totp(self, *, min_remaining: float = TOTP_MIN_REMAINING, reset: bool = True) -> str:
        """A code the server accepts for the next login (see OathToken.code); one call per login."""
        if self.oath is None:
            raise RuntimeError(f"{self.pam_service} is a password-only server: no one-time codes")
        return self.oath.code(min_remaining=min_remaining, reset=reset)

    def answer(self, prompt: str, *, password: str | None = None, code: str | None = None) -> str:
        """The answer to one of our prompts: the password, or a fresh code (totp()) unless given."""
        if prompt == self.password_prompt:
            return self.password if password is None else password
        if self.oath is not None and prompt == self.otp_prompt:
            return self.totp() if code is None else code
        raise AssertionError(f"unexpected prompt {prompt!r} from {self.pam_service}")

    def handler(
        self, *, password: str | None = None, code: str | None = None, seen: list[str] | None = None
    ) -> Callable[[str, str, list[tuple[str, bool]]], list[str]]:
        """A keyboard-interactive handler for paramiko answering our prompts; ``seen`` collects them."""

        def handle(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            if seen is not None:
                seen.extend(text for text, _ in prompts)
            return [self.answer(text, password=password, code=code) for text, _ in prompts]

        return handle

    def write_ssh_config(self, client_home: Path, alias: str = "testhost", extra: dict[str, str] | None = None) -> Path:
        """As SSHServer's, but without keys: only keyboard-interactive (and password) remain."""
        options = {"IdentityFile": "none", "IdentitiesOnly": "yes", "PubkeyAuthentication": "no", **(extra or {})}
        return super().write_ssh_config(client_home, alias, options)

    def login_options(self) -> dict[str, Any]:
        """How `connect` logs in: keyboard-interactive (the password, and a fresh code)."""
        return {"auth_strategy": _OneSource(_KeyboardInteractive(self.user, self.handler()))}

    def close(self) -> None:
        try:
            super().close()
        finally:
            if not self._pam_closed:
                self._pam_closed = True
                _remove_pam_service(self.pam_service, Path(self.sshd_bin))


def launch_pam_sshd(account: SSHAccount, kind: str, ns: NetNamespace | None = None, *,
                    window: int = OATH_WINDOW) -> PamSSHServer:
    """Start an sshd authenticating through its own PAM service; ``kind`` is "2fa" or "password"."""
    if kind not in ("2fa", "password"):
        raise ValueError(f"kind must be '2fa' or 'password', not {kind!r}")
    _pam_prerequisites()
    sweep_stale_pam_services()
    service = f"rhl-{'2fa' if kind == '2fa' else 'pw'}-{secrets.token_hex(3)}"  # 14 chars: comm shows it whole
    state = _register_pam_service(service)
    link = account.base / "sbin" / service  # any absolute path will do; this one goes with the session's tree
    try:
        oath: OathToken | None = None
        if kind == "2fa":
            users_file = state / "users.oath"
            oath = OathToken(account.name, secrets.token_hex(20), users_file, window)
            fd = os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(oath.line())
        link.parent.mkdir(mode=0o755, exist_ok=True)
        link.symlink_to(SSHD_BIN)
        pam_file = PAM_D / service
        pam_file.write_text(_pam_file_text(service, link, oath.users_file if oath else None, window))
        pam_file.chmod(0o644)
        overrides = {
            "UsePAM": "yes",
            "KbdInteractiveAuthentication": "yes",
            "PubkeyAuthentication": "no",
            "PasswordAuthentication": "no" if kind == "2fa" else "yes",
            "AuthenticationMethods": "keyboard-interactive" if kind == "2fa" else "any",
        }
        if _sshd_knows_pam_service_name():
            overrides["PAMServiceName"] = service
        server = launch_sshd(account, service, ns, sshd_bin=str(link), config_overrides=overrides,
                             server_type=PamSSHServer, kind=kind, pam_service=service, pam_file=pam_file, oath=oath)
    except BaseException:
        _remove_pam_service(service, link)
        raise
    assert isinstance(server, PamSSHServer)
    return server


# --------------------------------------------------------------------------
# Certificate server: user certificates signed by a test CA, no authorized keys
# --------------------------------------------------------------------------


@dataclass
class CertSSHServer(SSHServer):
    """An sshd that accepts only user certificates signed by its CA (TrustedUserCAKeys, AuthorizedKeysFile
    none, no passwords): the session's client key alone is refused, `certify` makes it a certificate."""

    ca_key: Path = Path()

    def certify(self, destination: Path, *, principals: str | None = None, validity: str = "-5m:+1h") -> Path:
        """A certificate of the client key at `destination` (ssh-keygen -s: `principals` default to the
        test user, `validity` as -V takes it); returns it."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=destination.parent))
        try:
            public = work / "key.pub"
            shutil.copyfile(f"{self.client_key}.pub", public)
            _sh(["ssh-keygen", "-q", "-s", str(self.ca_key), "-I", "rhl-test", "-n", principals or self.user,
                 "-V", validity, str(public)])
            shutil.move(str(work / "key-cert.pub"), destination)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return destination

    def login_options(self) -> dict[str, Any]:
        """How `connect` logs in: the client key with a fresh certificate."""
        raise NotImplementedError("log in through the launcher with a certificate from certify()")


def launch_cert_sshd(account: SSHAccount, ns: NetNamespace | None = None) -> CertSSHServer:
    """Start an sshd that trusts a fresh CA for user certificates and nothing else."""
    ca_key = account.base / f"user_ca_{secrets.token_hex(3)}"
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rhl-test-ca", "-f", str(ca_key)])
    Path(f"{ca_key}.pub").chmod(0o644)
    overrides = {"TrustedUserCAKeys": f"{ca_key}.pub", "AuthorizedKeysFile": "none",
                 "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no"}
    server = launch_sshd(account, ca_key.name.replace("user_ca", "cert"), ns, config_overrides=overrides,
                         server_type=CertSSHServer, ca_key=ca_key)
    assert isinstance(server, CertSSHServer)
    return server


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


S = TypeVar("S", bound="SSHServer")

def _in_namespace(account: SSHAccount, launch: Callable[[NetNamespace | None], S]) -> Iterator[S]:
    """A server launched in its own network namespace when possible (see module doc), closed afterwards."""
    ns = NetNamespace.try_create()
    try:
        server = launch(ns)
    except BaseException:
        if ns is not None:
            ns.close(uid=account.uid)
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def sshd(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    """Target sshd, in its own network namespace when possible (see module doc)."""
    yield from _in_namespace(sshd_account, lambda ns: launch_sshd(sshd_account, "target", ns))


@pytest.fixture(scope="session")
def jump_sshd(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    """Bastion sshd on 127.0.0.1 in the host namespace (reaches ``sshd.host``)."""
    server = launch_sshd(sshd_account, "jump")
    try:
        yield server
    finally:
        server.close()


def _pam_server(account: SSHAccount, kind: str) -> Iterator[PamSSHServer]:
    yield from _in_namespace(account, lambda ns: launch_pam_sshd(account, kind, ns))


@pytest.fixture(scope="session")
def sshd_2fa(sshd_account: SSHAccount) -> Iterator[PamSSHServer]:
    """sshd asking, by keyboard-interactive through PAM, for the password and then a TOTP code (totp())."""
    yield from _pam_server(sshd_account, "2fa")


@pytest.fixture(scope="session")
def sshd_password(sshd_account: SSHAccount) -> Iterator[PamSSHServer]:
    """sshd asking once, through PAM (pam_unix), for the password (keyboard-interactive or password)."""
    yield from _pam_server(sshd_account, "password")


@pytest.fixture(scope="session")
def sshd_cert(sshd_account: SSHAccount) -> Iterator[CertSSHServer]:
    """sshd accepting only user certificates signed by its CA (`certify` issues them)."""
    yield from _in_namespace(sshd_account, lambda ns: launch_cert_sshd(sshd_account, ns))
