"""The one door to paramiko and sshtunnel: an import without `invoke`, and every private member we use.

paramiko imports invoke (asyncio, unittest.mock, a vendored YAML: ~50 ms of
every SSH run) only to run `Match exec` lines of ~/.ssh/config. Importing this
module loads paramiko with invoke hidden unless ~/.ssh/config has such a line;
`allow_match_exec` brings it back should a later config have one.

Pipelined SFTP, the tunnel and Kerberos logins (gssapi-with-mic, which paramiko 5
no longer has: an auth handler of ours) need private members of paramiko and sshtunnel.
They are named here only, behind thin wrappers, and listed in PRIVATE_MEMBERS
so that tests/test_private_api.py names whatever an upgrade removed.

sshtunnel imports paramiko itself, so it is imported only after paramiko was
loaded here, and lazily (`ForwardHandler`, `ThreadingForwardServer`): SSH runs
without a tunnel never load it. This module imports nothing from the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any, Protocol

MATCH_EXEC_RE = re.compile(r"^[ \t]*match\b[^\n#]*\bexec\b", re.IGNORECASE | re.MULTILINE)

#: (importable object, attribute) for every private member used below.
PRIVATE_MEMBERS: tuple[tuple[str, str], ...] = (
    ("paramiko.transport.Transport", "_send_user_message"),
    ("paramiko.sftp_client.SFTPClient", "_async_request"),
    ("paramiko.sftp_client.SFTPClient", "_read_response"),
    ("paramiko.sftp_client.SFTPClient", "_send_packet"),
    ("paramiko.sftp_client.SFTPClient", "_read_packet"),
    ("paramiko.sftp_client.SFTPClient", "_send_version"),
    ("paramiko.sftp_attr.SFTPAttributes", "_from_msg"),
    ("paramiko.config", "invoke"),  # public-looking, but only how paramiko.config holds its optional import
    ("paramiko.agent.AgentSSH", "_connect"),
    ("paramiko.transport.Transport", "_send_message"),
    ("paramiko.auth_handler.AuthHandler", "_request_auth"),
    ("paramiko.auth_handler.AuthHandler", "_parse_service_accept"),
    ("paramiko.auth_handler.AuthHandler", "_client_handler_table"),
    ("sshtunnel", "_ForwardHandler"),
    ("sshtunnel", "_ThreadingForwardServer"),
)


def user_ssh_config() -> Path:
    """~/.ssh/config (looked up on each call: HOME may change, e.g. in tests)."""
    return Path.home() / ".ssh" / "config"


def has_match_exec(path: Path) -> bool:
    """Whether the ssh config at `path` has a `Match exec` line; a missing or unreadable file has none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return False
    return MATCH_EXEC_RE.search(text) is not None


def _own_version(name: str) -> str:
    """`importlib.metadata.version(name)` read from the METADATA of the dist-info beside the package `name`,
    which is where pip put it; anything else (another layout, several copies) asks importlib.metadata."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin is not None:
        site = os.path.dirname(os.path.dirname(spec.origin))
        try:
            found = [entry for entry in os.listdir(site) if entry.startswith(f"{name}-")
                     and entry.endswith(".dist-info")]
            if len(found) == 1:
                with open(os.path.join(site, found[0], "METADATA"), encoding="utf-8") as metadata:
                    for line in metadata:
                        if line.startswith("Version:"):
                            return line[len("Version:"):].strip()
                        if not line.strip():
                            break  # the end of the headers
        except OSError:
            pass
    return str(_real_metadata().version(name))


def _real_metadata() -> Any:
    if sys.modules.get(_METADATA) is _STAND_IN:
        del sys.modules[_METADATA]  # the real one from now on
    return importlib.import_module(_METADATA)


# `import invoke` raises ImportError while sys.modules holds None for it; paramiko.config then keeps None.
_HIDE_INVOKE = "paramiko" not in sys.modules and "invoke" not in sys.modules and not has_match_exec(user_ssh_config())
# paramiko's __init__ imports importlib.metadata (with email and zipfile: ~45 ms before an SSH login can start)
# only for `metadata.version("paramiko")`: while it loads, that name is a module whose `version` is _own_version
# (any other name it asked for would load the real module).
_METADATA = "importlib.metadata"
_STAND_IN = types.ModuleType(_METADATA, "Stands in while paramiko loads: its version only.")
_STAND_IN.version = _own_version  # type: ignore[attr-defined]
_STAND_IN.__getattr__ = lambda attribute: getattr(_real_metadata(), attribute)  # type: ignore[method-assign]
if _HIDE_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
if _METADATA not in sys.modules and "paramiko" not in sys.modules:
    sys.modules[_METADATA] = _STAND_IN
try:
    import paramiko
    import paramiko.agent
    import paramiko.auth_handler
    import paramiko.common
    import paramiko.config
    import paramiko.sftp
finally:
    if _HIDE_INVOKE:
        del sys.modules["invoke"]
    if sys.modules.get(_METADATA) is _STAND_IN:
        del sys.modules[_METADATA]


# paramiko logs what its own thread met (e.g. "Exception (client): ..." with a traceback); with no handler
# of its own, Python's last-resort handler would print that on stderr beside our one-line error. Kept
# unless a debug log is asked for (logsetup.py then adds its handlers to this logger).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def allow_match_exec(path: Path) -> None:
    """Give paramiko invoke back when paramiko was loaded without it and the config at `path` needs it."""
    config_module: Any = paramiko.config  # the stubs do not declare `invoke`
    if config_module.invoke is None and has_match_exec(path):
        try:
            import invoke

            config_module.invoke = invoke
        except ImportError:
            pass  # paramiko reports it when a Match exec line is evaluated


# ---- transport ----

def send_user_message(transport: paramiko.Transport, message: paramiko.Message) -> None:
    """Send a message the way paramiko sends its own channel requests (waiting out a key re-exchange)."""
    internals: Any = transport
    internals._send_user_message(message)


def send_channel_request(channel: paramiko.Channel, kind: str, *fields: str) -> None:
    """Send a channel request ("exec", "subsystem") with want_reply set, without waiting for the answer
    (paramiko's exec_command and invoke_subsystem wait a round trip): what follows goes in the same flight.
    The server handles a channel's messages in order, and a refusal closes the channel."""
    request = paramiko.Message()
    request.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    request.add_int(channel.remote_chanid)
    request.add_string(kind)
    request.add_boolean(True)
    for field in fields:
        request.add_string(field)
    send_user_message(channel.get_transport(), request)


# ---- SFTP ----

def async_request(client: paramiko.SFTPClient, kind: int, *args: Any) -> int:
    """Send an SFTP request without waiting for its reply; its number, for `read_response`."""
    internals: Any = client
    return int(internals._async_request(type(None), kind, *args))


def read_response(client: paramiko.SFTPClient, number: int) -> paramiko.Message:
    """The reply to request `number` (earlier unawaited replies are read and dropped).

    An error status raises: EOFError, or OSError with errno when known.
    """
    internals: Any = client
    reply: paramiko.Message = internals._read_response(number)[1]
    return reply


def attributes_from(message: paramiko.Message) -> paramiko.SFTPAttributes:
    """The file attributes an ATTRS reply carries."""
    attributes_class: Any = paramiko.SFTPAttributes
    attributes: paramiko.SFTPAttributes = attributes_class._from_msg(message)
    return attributes


class SFTPClientHooks(paramiko.SFTPClient):
    """paramiko's SFTPClient with its version exchange and packet reads overridable under public names.

    paramiko's constructor sends INIT and waits for VERSION (`send_version`);
    every reply is read by `read_packet`. Subclasses override those two and
    may call `send_packet`; the defaults are paramiko's own.
    """

    def send_version(self) -> str:
        internals: Any = super()
        return str(internals._send_version())

    def read_packet(self) -> tuple[int, bytes]:
        internals: Any = super()
        packet: tuple[int, bytes] = internals._read_packet()
        return packet

    def send_packet(self, kind: int, message: paramiko.Message) -> None:
        internals: Any = self
        internals._send_packet(kind, message)

    # paramiko's names for the two hooks, as its constructor and `_read_response` call them
    def _send_version(self) -> str:
        return self.send_version()

    def _read_packet(self) -> tuple[int, bytes]:
        return self.read_packet()


# ---- sshtunnel, on first use ----

def __getattr__(name: str) -> Any:
    """`ForwardHandler` and `ThreadingForwardServer`: sshtunnel's forward-server bases (no type hints)."""
    if name == "ForwardHandler":
        return _sshtunnel()._ForwardHandler
    if name == "ThreadingForwardServer":
        return _sshtunnel()._ThreadingForwardServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sshtunnel() -> Any:
    """The sshtunnel module (untyped), loaded after paramiko: this module's import loaded that."""
    return importlib.import_module("sshtunnel")


# ---- upgrade check ----

# ---- agent ----

class _ConnectedAgent(paramiko.Agent):
    """paramiko's Agent over a given connection instead of the one it looks for itself."""

    def __init__(self, connection: Any) -> None:
        paramiko.agent.AgentSSH.__init__(self)
        internals: Any = self
        internals._connect(connection)


def agent_over(connection: Any) -> paramiko.Agent:
    """An agent client over an open connection (anything with send and recv): for IdentityAgent, which
    paramiko's Agent (SSH_AUTH_SOCK, Pageant, the OpenSSH pipe) does not take."""
    return _ConnectedAgent(connection)


# ---- gssapi-with-mic (RFC 4462) ----

KRB5_MECHANISM = bytes.fromhex("06092a864886f712010202")  # the Kerberos 5 OID 1.2.840.113554.1.2.2, DER-encoded
GSSAPI_METHOD = "gssapi-with-mic"


class GSSContext(Protocol):
    """What the exchange needs of a GSS-API security context (ssh/kerberos.py makes one)."""

    @property
    def complete(self) -> bool: ...

    def step(self, token: bytes | None) -> bytes | None: ...

    def sign(self, data: bytes) -> bytes: ...


class _GSSAPIAuthHandler(paramiko.auth_handler.AuthHandler):
    """paramiko's client auth handler with the gssapi-with-mic exchange, which paramiko 5 no longer has.

    Runs on paramiko's transport thread, like the other methods: the request names the Kerberos
    mechanism, each server token is stepped through `context`, then the MIC over the session proves
    the context. A failure of the context is an AuthenticationException with its reason.
    """

    def __init__(self, transport: paramiko.Transport, context: GSSContext, username: str) -> None:
        super().__init__(transport)
        self.context = context
        self.login = username
        self.server_error = ""

    def start(self, event: threading.Event) -> None:
        internals: Any = self
        with self.transport.lock:
            self.auth_event = event
            self.auth_method = GSSAPI_METHOD
            self.username = self.login
            internals._request_auth()

    @property
    def _client_handler_table(self) -> dict[int, Any]:
        base: Any = super()
        table: dict[int, Any] = dict(base._client_handler_table)
        table.update({paramiko.common.MSG_USERAUTH_GSSAPI_RESPONSE: self.gss_response,
                      paramiko.common.MSG_USERAUTH_GSSAPI_TOKEN: self.gss_token,
                      paramiko.common.MSG_USERAUTH_GSSAPI_ERROR: self.gss_error,
                      paramiko.common.MSG_USERAUTH_GSSAPI_ERRTOK: self.gss_token})
        return table

    def _parse_service_accept(self, m: paramiko.Message) -> None:
        if m.get_text() != "ssh-userauth":
            return
        request = self.gss_message(paramiko.common.cMSG_USERAUTH_REQUEST)
        request.add_string(self.login)
        request.add_string("ssh-connection")
        request.add_string(GSSAPI_METHOD)
        request.add_int(1)
        request.add_string(KRB5_MECHANISM)
        self.gss_send(request)

    def gss_response(self, m: paramiko.Message) -> None:
        if m.get_binary() != KRB5_MECHANISM:
            self.gss_fail("the server chose a mechanism other than Kerberos 5")
            return
        self.gss_step(None)

    def gss_token(self, m: paramiko.Message) -> None:
        self.gss_step(m.get_binary())

    def gss_error(self, m: paramiko.Message) -> None:
        m.get_int()  # major status
        m.get_int()  # minor status
        self.server_error = m.get_text().strip()

    def gss_step(self, token: bytes | None) -> None:
        try:
            reply = self.context.step(token)
            if reply:
                message = self.gss_message(paramiko.common.cMSG_USERAUTH_GSSAPI_TOKEN)
                message.add_string(reply)
                self.gss_send(message)
            if self.context.complete:
                signed = paramiko.Message()
                signed.add_string(self.transport.session_id or b"")
                signed.add_byte(paramiko.common.cMSG_USERAUTH_REQUEST)
                signed.add_string(self.login)
                signed.add_string("ssh-connection")
                signed.add_string(GSSAPI_METHOD)
                mic = self.gss_message(paramiko.common.cMSG_USERAUTH_GSSAPI_MIC)
                mic.add_string(self.context.sign(signed.asbytes()))
                self.gss_send(mic)
        except Exception as exc:  # the GSS-API library's errors: the reason is all the caller needs
            self.gss_fail(" ".join(str(exc).split()) or type(exc).__name__)

    def gss_fail(self, reason: str) -> None:
        detail = f"{reason} (server: {self.server_error})" if self.server_error else reason
        self.transport.saved_exception = paramiko.AuthenticationException(detail)
        if self.auth_event is not None:
            self.auth_event.set()

    @staticmethod
    def gss_message(kind: bytes) -> paramiko.Message:
        message = paramiko.Message()
        message.add_byte(kind)
        return message

    def gss_send(self, message: paramiko.Message) -> None:
        internals: Any = self.transport
        internals._send_message(message)


def auth_gssapi_with_mic(transport: paramiko.Transport, username: str, context: GSSContext) -> list[str]:
    """Log in by gssapi-with-mic with an initiating `context`; what Transport.auth_* return and raise."""
    event = threading.Event()
    handler = _GSSAPIAuthHandler(transport, context, username)
    transport.auth_handler = handler
    handler.start(event)
    remaining: list[str] = handler.wait_for_response(event)
    return remaining


class _PipelinedAuthHandler(paramiko.auth_handler.AuthHandler):
    """paramiko's client auth handler, sending its USERAUTH_REQUEST right behind the SERVICE_REQUEST.

    paramiko waits for the server's SERVICE_ACCEPT in between, a round trip of every login attempt; the
    server handles the two in order, and an accept is all it may answer (a refusal ends the connection,
    which ends the attempt either way). The accept, when it comes, is then ignored.
    """

    sent_early = False

    def _request_auth(self) -> None:
        base: Any = super()
        self.sent_early = True  # before the request: the accept may be handled on paramiko's thread at once
        base._request_auth()
        accept = paramiko.Message()
        accept.add_string("ssh-userauth")
        accept.rewind()
        base._parse_service_accept(accept)

    def _parse_service_accept(self, m: paramiko.Message) -> None:
        if not self.sent_early:
            base: Any = super()
            base._parse_service_accept(m)


def auth_publickey_pipelined(transport: paramiko.Transport, username: str, key: paramiko.PKey) -> list[str]:
    """transport.auth_publickey in one round trip instead of two (_PipelinedAuthHandler); the same returns
    and raises. An RSA key's signature algorithm depends on the server's EXT_INFO: until that has arrived,
    paramiko's own way, which waits for the accept (EXT_INFO comes before it)."""
    extensions: dict[str, bytes] = getattr(transport, "server_extensions", {})  # public, but not in the stubs
    if "rsa" in key.get_name() and "server-sig-algs" not in extensions:
        return transport.auth_publickey(username, key)
    if not transport.is_active() or not transport.initial_kex_done:
        raise paramiko.SSHException("No existing session")
    event = threading.Event()
    handler = _PipelinedAuthHandler(transport)
    transport.auth_handler = handler
    handler.auth_publickey(username, key, event)
    remaining: list[str] = handler.wait_for_response(event)
    return remaining


def missing_private_members() -> list[str]:
    """`module.Class.attr` for each member of PRIVATE_MEMBERS that the installed versions no longer have."""
    missing = []
    for owner_path, attribute in PRIVATE_MEMBERS:
        owner = _resolve(owner_path)
        if owner is None or not hasattr(owner, attribute):
            missing.append(f"{owner_path}.{attribute}")
    return missing


def _resolve(path: str) -> object | None:
    """The object at a dotted path (the longest importable module, then attributes); None when gone."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            found = getattr(found, name, None)
            if found is None:
                return None
        return found
    return None


__all__ = ["GSSAPI_METHOD", "KRB5_MECHANISM", "MATCH_EXEC_RE", "PRIVATE_MEMBERS", "GSSContext", "SFTPClientHooks",
           "agent_over", "allow_match_exec", "async_request", "attributes_from", "auth_gssapi_with_mic",
           "has_match_exec", "missing_private_members", "paramiko", "read_response", "send_user_message",
           "user_ssh_config"]
