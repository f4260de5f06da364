"""The one door to paramiko and sshtunnel: an import without `invoke`, and every private member we use.

paramiko imports invoke (asyncio, unittest.mock, a vendored YAML: ~50 ms of
every SSH run) only to run `Match exec` lines of ~/.ssh/config. Importing this
module loads paramiko with invoke hidden unless ~/.ssh/config has such a line;
`allow_match_exec` brings it back should a later config have one.

Pipelined SFTP and the tunnel need private members of paramiko and sshtunnel.
They are named here only, behind thin wrappers, and listed in PRIVATE_MEMBERS
so that tests/test_private_api.py names whatever an upgrade removed.

sshtunnel imports paramiko itself, so it is imported only after paramiko was
loaded here, and lazily (`ForwardHandler`, `ThreadingForwardServer`): SSH runs
without a tunnel never load it. This module imports nothing from the package.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

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


# `import invoke` raises ImportError while sys.modules holds None for it; paramiko.config then keeps None.
_HIDE_INVOKE = "paramiko" not in sys.modules and "invoke" not in sys.modules and not has_match_exec(user_ssh_config())
if _HIDE_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.agent
    import paramiko.common
    import paramiko.config
    import paramiko.sftp
finally:
    if _HIDE_INVOKE:
        del sys.modules["invoke"]


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


__all__ = ["MATCH_EXEC_RE", "PRIVATE_MEMBERS", "SFTPClientHooks", "agent_over", "allow_match_exec", "async_request",
           "attributes_from", "has_match_exec", "missing_private_members", "paramiko", "read_response",
           "send_user_message", "user_ssh_config"]
