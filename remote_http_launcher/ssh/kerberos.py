"""Kerberos logins (`GSSAPIAuthentication yes`) through the optional `pyspnego` package, as OpenSSH makes them.

pyspnego speaks GSS-API (MIT Kerberos or Heimdal, through `gssapi`) on
Linux and macOS, and SSPI on Windows, behind one interface: the same code
logs in everywhere. The ticket is the one `kinit` left in the credential
cache the command runs with (`KRB5CCNAME`, inherited by the tunnel keeper
and the broker, which log in again with it); on Windows, the one Windows
got when the user signed in with a domain account. The server's principal
is `host/NAME` (`server_name`). Loaded only when a login tries this method.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spnego import ContextProxy

KERBEROS_EXTRA = "pip install 'remote-http-launcher[kerberos]'"
#: The Kerberos error table's "Ticket expired" (KRB5KRB_AP_ERR_TKT_EXPIRED, the same in MIT and Heimdal)
#: as the GSS-API minor status: what the first step of a context reports for an expired ticket.
TICKET_EXPIRED = 2**32 - 1765328352
SERVICE = "host"  # the service part of an SSH server's principal, host/NAME


@dataclass(frozen=True)
class Unavailable:
    """Why Kerberos cannot log in to this server: `short` for the list of what was tried, `detail` and
    `advice` (what to do) for the error; `skipped` when the login never started (no ticket, no package),
    not refused."""

    short: str
    detail: str = ""
    advice: str = ""
    skipped: bool = True

    @property
    def line(self) -> str:
        return f"{self.detail}: {self.advice}"


def renew_advice() -> str:
    """What gets a user a (new) ticket: kinit, or on Windows (SSPI) signing in with a domain account."""
    return "sign in to Windows with your domain account" if sys.platform == "win32" else "run kinit"


def start(server: str, delegate: bool) -> Context | Unavailable:
    """A context for `host/server` with the user's ticket, its first token made (so a missing or expired
    ticket is known before the server is asked); else why there is none."""
    try:
        import spnego
        from spnego.exceptions import CredentialsExpiredError, NoCredentialError, SpnegoError
    except ImportError as exc:
        return _missing(exc)
    wanted = spnego.ContextReq.mutual_auth | spnego.ContextReq.integrity
    if delegate:
        wanted |= spnego.ContextReq.delegate
    try:
        context = spnego.client(hostname=server, service=SERVICE, protocol="kerberos", context_req=wanted)
        first = context.step()
    except ImportError as exc:  # pyspnego without the GSS-API bindings it needs here (gssapi, krb5)
        return _missing(exc)
    except NoCredentialError as exc:
        return Unavailable("no ticket", f"no Kerberos ticket ({_reason(exc)})", renew_advice())
    except SpnegoError as exc:
        if isinstance(exc, CredentialsExpiredError) or getattr(exc.base_error, "min_code", None) == TICKET_EXPIRED:
            return Unavailable("ticket expired", "the Kerberos ticket expired", renew_advice())
        return Unavailable(_reason(exc), skipped=False)
    return Context(context, first)


class Context:
    """An initiating context for one server (the GSSContext the exchange in _paramiko.py steps); its first
    token is already made."""

    def __init__(self, context: ContextProxy, first: bytes | None) -> None:
        self._context = context
        self._first = first

    @property
    def complete(self) -> bool:
        return bool(self._context.complete)

    def step(self, token: bytes | None) -> bytes | None:
        if token is None:
            return self._first
        return self._context.step(token) or None

    def sign(self, data: bytes) -> bytes:
        return self._context.sign(data)


def peer_address(stream: object) -> str:
    """The address a connection reached ("" when it is not a TCP socket: ProxyJump, ProxyCommand)."""
    if not isinstance(stream, socket.socket):
        return ""
    try:
        return str(stream.getpeername()[0])
    except (OSError, IndexError):
        return ""


def server_name(host: str, address: str, trust_dns: bool) -> str:
    """The NAME of the server's principal, as OpenSSH picks it: the host name as configured (HostName);
    with `GSSAPITrustDNS yes`, the name a reverse lookup of the connected `address` gives, kept only when
    a forward lookup of that name gives the address back (else the address itself). Without an address
    to look up (not a TCP connection), the configured name."""
    if not trust_dns or not address:
        return host
    try:
        name = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0]
        found = {str(info[4][0]) for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return address
    return name.lower() if address in found else address


def _missing(exc: ImportError) -> Unavailable:
    reason = f"no module {exc.name}" if exc.name else " ".join(str(exc).split())
    return Unavailable("no Kerberos support", f"Kerberos support is not installed ({reason})", KERBEROS_EXTRA)


def _reason(exc: BaseException) -> str:
    """The Kerberos library's message, on one line, without status codes and pyspnego's context."""
    text = " ".join(str(exc).split()).split(", Context: ", 1)[0]
    for marker in ("Minor (", "Major (", "SpnegoError ("):
        if marker in text:
            return text.split(marker, 1)[1].split("): ", 1)[-1]
    return text


def ticket() -> tuple[str, float] | None:
    """The principal of the user's ticket and when it expires (epoch seconds), where GSS-API can say
    (not through SSPI); None when it cannot."""
    try:
        import gssapi

        credentials = gssapi.Credentials(usage="initiate")
        return str(credentials.name), time.time() + float(credentials.lifetime)
    except Exception:  # no gssapi (Windows), no ticket: `start` says why
        return None


__all__ = ["KERBEROS_EXTRA", "SERVICE", "TICKET_EXPIRED", "Context", "Unavailable", "peer_address", "renew_advice",
           "server_name", "start", "ticket"]
