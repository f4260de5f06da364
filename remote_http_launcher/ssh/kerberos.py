"""Kerberos logins (`GSSAPIAuthentication yes`) through the optional `gssapi` package, as OpenSSH makes them.

The ticket is the one `kinit` left in the credential cache the command runs
with (`KRB5CCNAME`, inherited by the tunnel keeper and the broker, which log
in again with it). The server's principal is `host/NAME` for the host name
as configured (HostName), or `GSSAPIServerIdentity`; like OpenSSH with its
default `GSSAPITrustDNS no`, the address is not reverse-resolved. The
`gssapi` package (MIT Kerberos or Heimdal; on Windows, MIT Kerberos for
Windows) is loaded only when a login tries this method.
"""

from __future__ import annotations

from typing import Any

KERBEROS_EXTRA = "pip install 'remote-http-launcher[kerberos]'"
EXPIRED = ("ticket expired", "the Kerberos ticket expired: run kinit")


def start(server: str, delegate: bool) -> Context | tuple[str, str]:
    """A context for `host@server` with the cached ticket; else why there is none: a few words, and the
    whole line with what to do."""
    try:
        import gssapi
        from gssapi.raw.exceptions import ExpiredCredentialsError
        from gssapi.raw.misc import GSSError
    except ImportError:
        return "no gssapi package", f"the Python package gssapi is missing: {KERBEROS_EXTRA}"
    flags = gssapi.RequirementFlag
    wanted = flags.mutual_authentication | flags.integrity | (flags.delegate_to_peer if delegate else 0)
    try:
        credentials = gssapi.Credentials(usage="initiate")
        if credentials.lifetime == 0:
            return EXPIRED
        name = gssapi.Name(f"host@{server}", gssapi.NameType.hostbased_service)
        return Context(gssapi.SecurityContext(name=name, creds=credentials, flags=wanted,
                                              mech=gssapi.MechType.kerberos, usage="initiate"))
    except ExpiredCredentialsError:
        return EXPIRED
    except GSSError as exc:
        return "no ticket", f"no Kerberos ticket ({_reason(exc)}): run kinit"


class Context:
    """An initiating GSS-API context for one server (the GSSContext the exchange in _paramiko.py steps)."""

    def __init__(self, context: Any) -> None:
        self._context = context

    @property
    def complete(self) -> bool:
        return bool(self._context.complete)

    def step(self, token: bytes | None) -> bytes | None:
        reply = self._context.step(token)
        return bytes(reply) if reply else None

    def sign(self, data: bytes) -> bytes:
        return bytes(self._context.get_signature(data))


def _reason(exc: BaseException) -> str:
    """The GSS-API library's message, on one line, without its status codes."""
    text = " ".join(str(exc).split())
    return text.split("Minor (", 1)[-1].split("): ", 1)[-1] if "Minor (" in text else text


__all__ = ["EXPIRED", "KERBEROS_EXTRA", "Context", "start"]
