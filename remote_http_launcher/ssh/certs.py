"""OpenSSH user certificates, read the way ssh and the server read them.

A certificate is offered with the private key it certifies, so each one is
matched to a key by the public key it carries. Its validity period and
principals are checked before it is offered: a server refuses an expired
certificate, or one for another login, with the same bare "permission
denied" as a wrong key, while the certificate itself says what is wrong.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from ._paramiko import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
USER_CERT = 1  # SSH2_CERT_TYPE_USER
FOREVER = 2**64 - 1  # valid_before of a certificate that never expires
#: Length-prefixed fields (strings or mpints) of each key type's public part, as certificates embed them.
KEY_FIELDS = {"ssh-ed25519": 1, "ssh-rsa": 2, "ssh-dss": 4, "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2,
              "ecdsa-sha2-nistp521": 2, "sk-ssh-ed25519@openssh.com": 2, "sk-ecdsa-sha2-nistp256@openssh.com": 3}


@dataclass(frozen=True)
class Certificate:
    """One user certificate: where it came from, the key it certifies, who and when it is valid for."""

    label: str  # the file (as the user wrote it) or "agent certificate"
    blob: bytes  # the whole certificate, as it goes on the wire
    key_blob: bytes  # the certified public key, as the plain key's asbytes()
    cert_type: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int

    @property
    def public_blob(self) -> paramiko.pkey.PublicBlob:
        """The certificate as paramiko presents it in place of a key's public part."""
        return paramiko.pkey.PublicBlob.from_message(paramiko.Message(self.blob))

    def problem(self, user: str, now: float | None = None) -> str:
        """Why a server would refuse this certificate for `user` ("" when it would not, as far as it says)."""
        moment = time.time() if now is None else now
        if self.cert_type != USER_CERT:
            return f"certificate {self.label} is a host certificate, not a user certificate"
        if moment >= self.valid_before:
            return f"certificate {self.label} expired at {when(self.valid_before)}; get a new one"
        if moment < self.valid_after:
            return f"certificate {self.label} is not valid before {when(self.valid_after)}; check the clock"
        if self.principals and user not in self.principals:
            return (f"certificate {self.label} is for {', '.join(self.principals)}, not {user}; "
                    "set User for this host or get a certificate for it")
        return ""


def parse(blob: bytes, label: str) -> Certificate:
    """A certificate from its wire form; ValueError when it is not one."""
    try:
        message = paramiko.Message(blob)
        name = message.get_text()
        plain = name[:-len(CERT_SUFFIX)] if name.endswith(CERT_SUFFIX) else ""
        if plain not in KEY_FIELDS:
            raise ValueError(f"not an OpenSSH certificate of a known key type ({name})")
        message.get_binary()  # nonce
        key = paramiko.Message()
        key.add_string(plain)
        for _ in range(KEY_FIELDS[plain]):
            key.add_string(message.get_binary())
        message.get_int64()  # serial
        cert_type = message.get_int()
        message.get_binary()  # key id
        principals = paramiko.Message(message.get_binary())
        names: list[str] = []
        while principals.get_remainder():
            names.append(principals.get_text())
        valid_after, valid_before = message.get_int64(), message.get_int64()
    except (IndexError, UnicodeDecodeError, paramiko.SSHException) as exc:
        raise ValueError(f"not an OpenSSH certificate ({exc})") from None
    return Certificate(label, blob, key.asbytes(), cert_type, tuple(names), valid_after, valid_before)


def read(path: Path, label: str) -> Certificate:
    """The certificate in a `-cert.pub` file (`TYPE BASE64 [COMMENT]`); OSError or ValueError."""
    fields = path.read_text(encoding="ascii", errors="replace").split()
    if len(fields) < 2:
        raise ValueError("not an OpenSSH certificate (expected 'TYPE BASE64')")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError("not an OpenSSH certificate (bad base64)") from None
    return parse(blob, label)


def is_certificate(key_type: str) -> bool:
    return key_type.endswith(CERT_SUFFIX)


def when(stamp: int) -> str:
    """A validity bound as OpenSSH's ssh-keygen -L shows it, in UTC."""
    if stamp >= FOREVER:
        return "forever"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


__all__ = ["CERT_SUFFIX", "FOREVER", "KEY_FIELDS", "USER_CERT", "Certificate", "is_certificate", "parse", "read",
           "when"]
