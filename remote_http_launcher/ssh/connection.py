"""One authenticated, host-key-verified paramiko Transport, set up the way OpenSSH would.

Users already describe their hosts in ~/.ssh/config (aliases, keys, jump
hosts), so we honour it instead of inventing our own settings, and we never
run the `ssh` binary. Everything is done on a bare `paramiko.Transport` so the
order of authentication methods, the host-key policy and every error message
are ours: each failure is one line naming the host and the step.

paramiko is imported lazily (in `connect`), so local runs never pay for it.
"""

from __future__ import annotations

import base64
import getpass
import os
import re
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import statefiles
from ..errors import AuthenticationError, HostError, HostKeyError

if TYPE_CHECKING:
    import paramiko

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 15.0
MIN_HANDSHAKE_TIMEOUT = 15.0
DEFAULT_REPLY_TIMEOUT = 15.0  # a server silent this long while we wait for it is gone
DEFAULT_ALIVE_COUNT = 3  # OpenSSH's ServerAliveCountMax
MAX_PROXY_DEPTH = 8
MAX_AUTH_STEPS = 5  # partial successes (2-factor) before we give up
PASSWORD_PROMPTS = 3  # OpenSSH's NumberOfPasswordPrompts
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
DEFAULT_METHODS = ("publickey", "keyboard-interactive", "password")
CHANNEL_ORIGIN = ("127.0.0.1", 0)
STRICT_MODES = {"yes": "yes", "true": "yes", "ask": "ask", "accept-new": "accept-new",
                "no": "no", "off": "no", "false": "no"}
RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
MATCH_EXEC_RE = re.compile(r"^[ \t]*match\b[^\n#]*\bexec\b", re.IGNORECASE | re.MULTILINE)
HOP_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+))(?::(?P<port>\d+))?$")


def shorten(path: Path | str) -> str:
    """A path as the user wrote it, with the home directory shown as `~`."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


@dataclass(frozen=True)
class Endpoint:
    """One SSH server as ~/.ssh/config describes it."""

    alias: str
    hostname: str
    port: int
    user: str
    options: dict[str, Any]

    @property
    def label(self) -> str:
        """How messages name this server: `ssh alias (address:port)` or `ssh user@host:port`."""
        if self.alias != self.hostname:
            return f"ssh {self.alias} ({self.hostname}:{self.port})"
        return f"ssh {self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name looked up in known_hosts: HostKeyAlias, else host or [host]:port."""
        alias = self.options.get("hostkeyalias")
        if alias:
            return str(alias)
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def connect_timeout(self) -> float:
        value = self.options.get("connecttimeout")
        try:
            return float(value) if value and float(value) > 0 else DEFAULT_CONNECT_TIMEOUT
        except ValueError:
            return DEFAULT_CONNECT_TIMEOUT

    @property
    def reply_timeout(self) -> float:
        """Seconds of silence after which the server counts as gone: like ssh, ServerAliveInterval
        times ServerAliveCountMax when set; else DEFAULT_REPLY_TIMEOUT (ssh itself would wait for TCP)."""
        try:
            interval = float(self.option("serveraliveinterval") or 0)
            count = int(self.option("serveralivecountmax") or DEFAULT_ALIVE_COUNT)
        except ValueError:
            return DEFAULT_REPLY_TIMEOUT
        return interval * max(count, 1) if interval > 0 else DEFAULT_REPLY_TIMEOUT

    def option(self, name: str, default: str = "") -> str:
        return str(self.options.get(name, default)).strip()

    def flag(self, name: str, default: bool) -> bool:
        value = self.option(name).lower()
        return default if not value else value in ("yes", "true")

    def fail(self, step: str, detail: str, kind: type[HostError] = HostError) -> HostError:
        return kind(f"{self.label}: {step}: {detail}")


@dataclass(eq=False)
class SSHConnection:
    """A live SSH connection: the target's Transport plus the jump hosts it runs through."""

    endpoint: Endpoint
    transport: paramiko.Transport
    hops: list[SSHConnection] = field(default_factory=list)
    #: Why the connection was closed under us (e.g. "no answer within 15 s"), for error messages.
    lost: str | None = None

    @property
    def label(self) -> str:
        return self.endpoint.label

    @contextmanager
    def answer_within(self, seconds: float | None = None) -> Iterator[None]:
        """Close the connection if the block is still waiting after `seconds` (default: the reply timeout).

        For the waits paramiko makes without any limit (opening a session,
        starting a subsystem or a command): a link that dies silently raises
        nothing for many minutes (TCP keeps retransmitting). Closing the
        transport wakes every waiter with an error, and `lost` says why.
        """
        limit = self.endpoint.reply_timeout if seconds is None else seconds
        timer = threading.Timer(limit, self.give_up, (f"no answer within {limit:g} s",))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def give_up(self, reason: str) -> None:
        """Close a connection whose server stopped answering; later steps fail at once, naming `reason`."""
        if self.transport.is_active():
            self.lost = reason
            self.close()

    def fail(self, step: str, detail: str, kind: type[HostError] = HostError) -> HostError:
        return self.endpoint.fail(step, detail, kind)

    def forward(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A `direct-tcpip` channel to host:port as seen from the server, usable as a socket.

        A refused or unreachable port raises ConnectionRefusedError and a slow
        one TimeoutError (both OSError, i.e. 'not answering'); a server that
        forbids forwarding or a dead connection raise HostError.
        """
        import paramiko
        from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

        try:
            channel = self.transport.open_channel("direct-tcpip", (host, port), CHANNEL_ORIGIN, timeout=timeout)
        except paramiko.ChannelException as exc:
            if exc.code == OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise self.fail("port forwarding", f"the server refuses TCP forwarding to {host}:{port} "
                                "(AllowTcpForwarding in its sshd_config)") from None
            raise ConnectionRefusedError(f"{host}:{port} via {self.label}: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self.transport.is_active():
                raise self.fail("port forwarding", "connection lost") from None
            raise TimeoutError(f"{host}:{port} via {self.label}: {exc}") from None
        channel.settimeout(timeout)
        return channel

    def close(self) -> None:
        self.transport.close()
        for hop in reversed(self.hops):
            hop.close()


def connect(target: str, *, interactive: bool | None = None) -> SSHConnection:
    """Connect to `target` ([user@]host or a ~/.ssh/config alias), verify it and log in.

    `interactive` (default: stdin is a terminal) allows prompts for unknown
    host keys, passphrases and passwords; without it those steps are skipped
    and a failure says how to fix it.
    """
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    config = load_ssh_config()
    user, _, host = target.rpartition("@")
    return _connect(resolve(config, host, user or None), config, interactive, depth=0)


def load_ssh_config() -> paramiko.SSHConfig:
    """~/.ssh/config; paramiko is imported here, first, without `invoke` unless `Match exec` needs it.

    paramiko imports invoke (asyncio, unittest.mock, a vendored YAML: ~50 ms
    of every SSH run) only to run `Match exec` commands, so it is hidden
    while paramiko loads when the config has no such line, and brought back
    should a later config have one.
    """
    path = Path.home() / ".ssh" / "config"
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        text = ""
    match_exec = MATCH_EXEC_RE.search(text) is not None
    if not match_exec and "paramiko" not in sys.modules and "invoke" not in sys.modules:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises ImportError
        try:
            import paramiko
        finally:
            del sys.modules["invoke"]
    import paramiko
    import paramiko.config

    if match_exec and paramiko.config.invoke is None:
        try:
            import invoke

            paramiko.config.invoke = invoke
        except ImportError:
            pass  # paramiko reports it when a Match exec line is evaluated
    try:
        return paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise HostError(f"ssh config {shorten(path)}: {exc}") from None


def resolve(config: paramiko.SSHConfig, host: str, user: str | None = None, port: int | None = None) -> Endpoint:
    """Apply ~/.ssh/config to a host name; explicit user and port win over it."""
    options = dict(config.lookup(host))
    try:
        config_port = int(options.get("port", DEFAULT_PORT))
    except ValueError:
        raise HostError(f"ssh {host}: ~/.ssh/config: Port {options['port']!r} is not a number") from None
    return Endpoint(alias=host, hostname=str(options.get("hostname", host)), port=port or config_port,
                    user=user or str(options.get("user") or getpass.getuser()), options=options)


def _connect(endpoint: Endpoint, config: paramiko.SSHConfig, interactive: bool, depth: int,
             via: SSHConnection | None = None) -> SSHConnection:
    """Open the stream (directly, or through `via`), exchange keys, check the host key, log in."""
    if depth > MAX_PROXY_DEPTH:
        raise endpoint.fail("ProxyJump", f"more than {MAX_PROXY_DEPTH} nested jump hosts (a loop? add "
                            "'ProxyJump none' to the jump host's entry in ~/.ssh/config)")
    hops: list[SSHConnection] = []
    transport = None
    try:
        sock = _channel_to(via, endpoint) if via else _open_stream(endpoint, config, interactive, depth, hops)
        known = KnownHosts.load(endpoint)
        transport = _start_transport(endpoint, sock, known)
        _check_host_key(endpoint, transport.get_remote_server_key(), known, interactive)
        Authenticator(endpoint, transport, interactive).run()
    except BaseException:
        if transport is not None:
            transport.close()
        for hop in reversed(hops):
            hop.close()
        raise
    interval = endpoint.option("serveraliveinterval")
    if interval.isdigit() and int(interval) > 0:
        transport.set_keepalive(int(interval))
    return SSHConnection(endpoint, transport, hops)


# ---- the byte stream: TCP, ProxyCommand or ProxyJump ----

def _open_stream(endpoint: Endpoint, config: paramiko.SSHConfig, interactive: bool, depth: int,
                 hops: list[SSHConnection]) -> Any:
    """ProxyJump wins over ProxyCommand (OpenSSH takes whichever the file sets first; paramiko can't tell)."""
    jump = endpoint.option("proxyjump")
    if jump and jump.lower() != "none":
        return _via_jump_hosts(endpoint, jump, config, interactive, depth, hops)
    command = endpoint.option("proxycommand")
    if command and command.lower() != "none":
        return _proxy_command(endpoint, command)
    return _tcp(endpoint)


def _tcp(endpoint: Endpoint) -> socket.socket:
    timeout = endpoint.connect_timeout
    try:
        sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout)
    except socket.gaierror as exc:
        raise endpoint.fail("connect", f"cannot resolve host name {endpoint.hostname!r} ({exc.strerror})") from None
    except TimeoutError:
        raise endpoint.fail("connect", f"timed out after {timeout:g} s") from None
    except OSError as exc:
        raise endpoint.fail("connect", (exc.strerror or str(exc)).lower()) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SSH packets are small; don't let Nagle delay them
    return sock


def _proxy_command(endpoint: Endpoint, command: str) -> Any:
    """Run ProxyCommand through the shell, as OpenSSH does (paramiko alone would not parse pipes)."""
    import paramiko

    argv = f"/bin/sh -c {shlex.quote('exec ' + command)}" if os.name == "posix" else command
    try:
        proxy = paramiko.ProxyCommand(argv)
    except (OSError, paramiko.SSHException) as exc:
        raise endpoint.fail("ProxyCommand", str(exc)) from None
    proxy.settimeout(endpoint.connect_timeout)
    return proxy


def parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` (IPv6 in brackets) from a ProxyJump list."""
    match = HOP_RE.match(spec.strip())
    if not match:
        raise HostError(f"ProxyJump: cannot parse jump host {spec!r} (expected [user@]host[:port])")
    port = match.group("port")
    return match.group("user"), match.group("v6") or match.group("host"), int(port) if port else None


def _via_jump_hosts(endpoint: Endpoint, jump: str, config: paramiko.SSHConfig, interactive: bool, depth: int,
                    hops: list[SSHConnection]) -> Any:
    """Connect through each jump host in turn; each hop is a Transport over the previous one's channel.

    The first hop is connected with its own ~/.ssh/config entry (which may
    itself use a proxy); later hops and the target are reached through
    `direct-tcpip` channels, as `ssh -J` does.
    """
    for spec in jump.split(","):
        user, host, port = parse_hop(spec)
        hop = resolve(config, host, user, port)
        try:
            hops.append(_connect(hop, config, interactive, depth + 1, via=hops[-1] if hops else None))
        except HostError as exc:
            raise type(exc)(f"{endpoint.label}: via jump host {hop.alias}: {exc}") from None
    return _channel_to(hops[-1], endpoint)


def _channel_to(via: SSHConnection, endpoint: Endpoint) -> paramiko.Channel:
    try:
        return via.forward(endpoint.hostname, endpoint.port, endpoint.connect_timeout)
    except OSError as exc:
        raise endpoint.fail("connect", f"via {via.endpoint.alias}: {exc}") from None


# ---- key exchange ----

def _start_transport(endpoint: Endpoint, sock: Any, known: KnownHosts) -> paramiko.Transport:
    import paramiko

    transport = paramiko.Transport(sock)
    timeout = endpoint.connect_timeout
    transport.banner_timeout = timeout
    transport.handshake_timeout = max(timeout, MIN_HANDSHAKE_TIMEOUT)
    options = transport.get_security_options()
    options.key_types = known.preferred_key_types(options.key_types)
    if endpoint.flag("compression", False):
        transport.use_compression(True)
    try:
        transport.start_client(timeout=transport.handshake_timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        detail = str(exc) or exc.__class__.__name__
        if "banner" in detail.lower():
            detail = f"no SSH greeting within {timeout:g} s ({detail}); is this an SSH server?"
        raise endpoint.fail("key exchange", detail) from None
    return transport


# ---- host keys ----

def key_type_label(key: paramiko.PKey) -> str:
    """OpenSSH's display name of a key type (ED25519, ECDSA, RSA)."""
    name = key.get_name()
    if name.startswith("ecdsa-"):
        return "ECDSA"
    return name.removeprefix("ssh-").split("@")[0].upper()


def key_description(key: paramiko.PKey) -> str:
    return f"{key_type_label(key)} key {key.fingerprint}"


@dataclass
class KnownHosts:
    """The known_hosts files that apply to one endpoint, and where new keys are recorded."""

    name: str
    entries: list[tuple[Path, paramiko.PKey]]
    record_path: Path
    hash_names: bool

    @classmethod
    def load(cls, endpoint: Endpoint) -> KnownHosts:
        import paramiko

        name = endpoint.known_hosts_name
        user_files = _paths(endpoint.option("userknownhostsfile") or DEFAULT_USER_KNOWN_HOSTS)
        global_files = _paths(endpoint.option("globalknownhostsfile") or DEFAULT_GLOBAL_KNOWN_HOSTS)
        entries: list[tuple[Path, paramiko.PKey]] = []
        for path in user_files + global_files:
            if not path.is_file():
                continue
            keys = paramiko.HostKeys()
            try:
                keys.load(str(path))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise endpoint.fail("host key", f"cannot read {shorten(path)}: {exc}", HostKeyError) from None
            entries.extend((path, key) for key in (keys.lookup(name) or {}).values())
        return cls(name, entries, user_files[0], endpoint.flag("hashknownhosts", False))

    def preferred_key_types(self, offered: Sequence[str]) -> tuple[str, ...]:
        """Ask the server for a key type we already know, as OpenSSH does, so a known host never looks new."""
        known = {key.get_name() for _, key in self.entries}
        if "ssh-rsa" in known:
            known.update(RSA_SIGNATURES)
        return tuple(t for t in offered if t in known) + tuple(t for t in offered if t not in known)

    def matches(self, key: paramiko.PKey) -> bool:
        return any(known.asbytes() == key.asbytes() for _, known in self.entries)

    def conflicting(self, key: paramiko.PKey) -> list[tuple[Path, paramiko.PKey]]:
        return [(path, known) for path, known in self.entries if known.get_name() == key.get_name()]

    def record(self, key: paramiko.PKey) -> None:
        """Append the key to the first UserKnownHostsFile (file 0600, directory 0700 when created)."""
        import paramiko

        self.record_path.parent.mkdir(mode=statefiles.DIR_MODE, parents=True, exist_ok=True)
        host = paramiko.HostKeys.hash_host(self.name) if self.hash_names else self.name
        path = self.record_path
        separator = "\n" if path.is_file() and path.read_bytes()[-1:] not in (b"", b"\n") else ""
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, statefiles.FILE_MODE), "a") as handle:
            handle.write(f"{separator}{host} {key.get_name()} {key.get_base64()}\n")
        self.entries.append((self.record_path, key))


def _paths(value: str) -> list[Path]:
    return [Path(os.path.expanduser(item)) for item in value.split()]


def _check_host_key(endpoint: Endpoint, key: paramiko.PKey, known: KnownHosts, interactive: bool) -> None:
    """OpenSSH's policy, except that a changed key is refused whatever StrictHostKeyChecking says."""
    if known.matches(key):
        return
    conflicts = known.conflicting(key)
    if conflicts:
        path, old = conflicts[0]
        raise endpoint.fail("host key", f"HOST KEY FOR {known.name} HAS CHANGED: the server sent "
                            f"{key_description(key)} but {shorten(path)} has {old.fingerprint}; someone may be "
                            "intercepting the connection, or the server was reinstalled (then remove the old "
                            f"key with: ssh-keygen -R {shlex.quote(known.name)})", HostKeyError)
    mode = STRICT_MODES.get(endpoint.option("stricthostkeychecking", "ask").lower(), "ask")
    if mode in ("accept-new", "no") or (mode == "ask" and interactive and _ask_unknown_key(endpoint, key, known)):
        known.record(key)
        return
    if mode == "ask" and interactive:
        raise endpoint.fail("host key", f"{key_description(key)} for {known.name} not accepted", HostKeyError)
    reason = "StrictHostKeyChecking is yes" if mode == "yes" else "no terminal to ask"
    keyscan = f"ssh-keyscan{'' if endpoint.port == DEFAULT_PORT else f' -p {endpoint.port}'} {endpoint.hostname}"
    raise endpoint.fail("host key", f"unknown {key_description(key)} for {known.name} ({reason}); to trust it, add "
                        f"'StrictHostKeyChecking accept-new' under 'Host {endpoint.alias}' in ~/.ssh/config, or run "
                        f"'{keyscan} >> {shorten(known.record_path)}' after checking the fingerprint", HostKeyError)


def _ask_unknown_key(endpoint: Endpoint, key: paramiko.PKey, known: KnownHosts) -> bool:
    others = ", ".join(sorted({key_type_label(k) for _, k in known.entries}))
    print(f"The authenticity of host '{endpoint.alias} ({endpoint.hostname}:{endpoint.port})' can't be established.\n"
          f"{key_type_label(key)} key fingerprint is {key.fingerprint}."
          + (f"\nbut keys of different type are already known for this host ({others})." if others else ""),
          file=sys.stderr)
    prompt = "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    while True:
        print(prompt, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip()
        if answer.lower() == "yes" or answer == key.fingerprint:
            return True
        if answer.lower() in ("no", ""):
            return False
        prompt = "Please type 'yes', 'no' or the fingerprint: "


# ---- authentication ----

@dataclass
class Authenticator:
    """Logs in like OpenSSH: agent keys, identity files, keyboard-interactive, password.

    Prompts (passphrases, passwords, 2-factor codes) happen only when
    `interactive`; otherwise those steps are recorded as skipped, so a failure
    is one line listing everything that was tried. Secrets never reach
    messages or logs.
    """

    endpoint: Endpoint
    transport: paramiko.Transport
    interactive: bool
    allowed: set[str] | None = None  # the server's list, once a refusal has told us
    tried: list[str] = field(default_factory=list)
    pending_keys: Iterator[tuple[str, paramiko.PKey]] | None = None

    agent: paramiko.Agent | None = None

    def run(self) -> None:
        try:
            for _ in range(MAX_AUTH_STEPS):
                if not self._round():
                    break
                if self.transport.is_authenticated():
                    return
        finally:
            if self.agent is not None:
                self.agent.close()
        raise self.endpoint.fail("auth", f"authentication failed (tried: {', '.join(self.tried) or 'nothing'})",
                                 AuthenticationError)

    def _round(self) -> bool:
        """Try each method in order; True when one succeeded (fully, or partially for 2-factor)."""
        attempts: dict[str, Callable[[], bool]] = {
            "publickey": self._publickey, "keyboard-interactive": self._keyboard_interactive,
            "password": self._password}
        for method in self._methods():
            if method in attempts and (self.allowed is None or method in self.allowed) and attempts[method]():
                return True
        return False

    def _methods(self) -> list[str]:
        preferred = self.endpoint.option("preferredauthentications")
        methods = [m.strip() for m in preferred.split(",")] if preferred else list(DEFAULT_METHODS)
        switches = {"publickey": "pubkeyauthentication", "keyboard-interactive": "kbdinteractiveauthentication",
                    "password": "passwordauthentication"}
        return [m for m in methods if m not in switches or self.endpoint.flag(switches[m], True)]

    def _attempt(self, method: str, call: Callable[[], list[str]]) -> bool | None:
        """One request: True on (partial) success, False when refused, None when the method is not allowed."""
        import paramiko

        try:
            remaining = call()
        except paramiko.BadAuthenticationType as exc:
            self.allowed = set(exc.allowed_types)
            return None
        except paramiko.AuthenticationException:
            return False
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if self.transport.is_active():
                raise self.endpoint.fail("auth", f"{method}: {exc}", AuthenticationError) from None
            raise self.endpoint.fail("auth", f"the server closed the connection (tried: {', '.join(self.tried)}); "
                                     "too many keys offered? set IdentityFile and 'IdentitiesOnly yes' for this "
                                     "host in ~/.ssh/config", AuthenticationError) from None
        if not self.transport.is_authenticated():
            self.allowed = set(remaining)  # partial success: the server names the next factor
        return True

    # publickey
    def _publickey(self) -> bool:
        """Offer the next keys; a later round (after a partial success) resumes where this one stopped."""
        if self.pending_keys is None:
            self.pending_keys = self._keys()
        for name, key in self.pending_keys:
            if name:
                self.tried.append(name)
            result = self._attempt("publickey", partial(self.transport.auth_publickey, self.endpoint.user, key))
            if result is not False:
                return bool(result)
        return False

    def _keys(self) -> Iterator[tuple[str, paramiko.PKey]]:
        """Agent keys first, then identity files (each loaded, and decrypted, only when reached)."""
        files = self._identity_files()
        offered = self._agent_keys()
        note = f"agent ({len(offered)} keys)"
        if self.endpoint.flag("identitiesonly", False):
            wanted = {blob for blob in map(_public_blob, files) if blob}
            ignored = [k for k in offered if k.asbytes() not in wanted]
            offered = [k for k in offered if k.asbytes() in wanted]
            note = f"agent ({len(offered)} keys, {len(ignored)} ignored: IdentitiesOnly)" if ignored \
                else f"agent ({len(offered)} keys)"
        self.tried.append(note)
        seen = {k.asbytes() for k in offered}
        for key in offered:
            yield "", key
        for path in files:
            if _public_blob(path) in seen:
                continue
            loaded = self._load_key(path)
            if loaded is not None and loaded.asbytes() not in seen:
                seen.add(loaded.asbytes())
                yield shorten(path), loaded

    def _identity_files(self) -> list[Path]:
        configured = self.endpoint.options.get("identityfile")
        if configured:
            names = [configured] if isinstance(configured, str) else list(configured)
            if any(name.lower() == "none" for name in names):
                return []
            return [Path(os.path.expanduser(name)) for name in names]
        return [p for p in (Path(os.path.expanduser(name)) for name in DEFAULT_IDENTITIES) if p.exists()]

    def _agent_keys(self) -> list[paramiko.PKey]:
        import paramiko

        if self.endpoint.option("identityagent").lower() == "none":
            return []
        try:
            self.agent = paramiko.Agent()
            return list(self.agent.get_keys())
        except (paramiko.SSHException, OSError):
            return []  # a stale SSH_AUTH_SOCK or an agent we cannot talk to: like no agent

    def _load_key(self, path: Path) -> paramiko.PKey | None:
        import paramiko

        shown = shorten(path)
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            pass
        except TypeError as exc:  # cryptography's way of saying an OpenSSH-format key is encrypted
            if "password" not in str(exc).lower():
                raise
        except FileNotFoundError:
            self.tried.append(f"{shown} (missing)")
            return None
        except (OSError, ValueError, paramiko.SSHException) as exc:
            self.tried.append(f"{shown} (unusable: {exc})")
            return None
        if not self.interactive:
            self.tried.append(f"{shown} (encrypted, skipped: no terminal for the passphrase)")
            return None
        for _ in range(PASSWORD_PROMPTS):
            passphrase = getpass.getpass(f"Enter passphrase for key '{shown}': ")
            if not passphrase:
                break
            try:
                # bytes, though annotated str: paramiko hands it to cryptography, which wants bytes
                return paramiko.PKey.from_path(path, password=passphrase.encode())  # type: ignore[arg-type]
            except (paramiko.SSHException, ValueError):
                print("Bad passphrase, try again.", file=sys.stderr)
        self.tried.append(f"{shown} (encrypted, no passphrase)")
        return None

    # keyboard-interactive and password
    def _keyboard_interactive(self) -> bool:
        shown = 0

        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            nonlocal shown
            shown += len(prompts)
            return _answer_prompts(title, instructions, prompts)

        return self._prompted("keyboard-interactive", lambda: self.transport.auth_interactive(
            self.endpoint.user, answer), lambda: shown > 0)

    def _password(self) -> bool:
        prompt = f"{self.endpoint.user}@{self.endpoint.hostname}'s password: "
        return self._prompted("password", lambda: self.transport.auth_password(
            self.endpoint.user, getpass.getpass(prompt), fallback=False))

    def _prompted(self, method: str, call: Callable[[], list[str]],
                  prompted: Callable[[], bool] = lambda: True) -> bool:
        """Up to PASSWORD_PROMPTS attempts; a refusal without any prompt is not worth repeating."""
        if not self.interactive:
            self.tried.append(f"{method} skipped: no terminal")
            return False
        for attempt in range(PASSWORD_PROMPTS):
            result = self._attempt(method, call)
            if result is None:
                return False
            if attempt == 0:
                self.tried.append(method)
            if result:
                return True
            if not prompted():
                return False
            print("Permission denied, please try again.", file=sys.stderr)
        return False


def _public_blob(path: Path) -> bytes | None:
    """The public key of an identity file, from its .pub companion (so no passphrase is needed)."""
    try:
        fields = Path(f"{path}.pub").read_text().split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError):
        return None


def _answer_prompts(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
    """keyboard-interactive on the terminal: several prompts per round for 2-factor logins."""
    for text in (title, instructions):
        if text.strip():
            print(text.strip(), file=sys.stderr)
    answers = []
    for prompt, echo in prompts:
        if echo:
            print(prompt, end="", file=sys.stderr, flush=True)
            answers.append(sys.stdin.readline().rstrip("\n"))
        else:
            answers.append(getpass.getpass(prompt))
    return answers
