"""The ciphers we offer, in order: AES-GCM first, and ~/.ssh/config's `Ciphers` honoured.

paramiko (5.x here) supports aes128-gcm@openssh.com and aes256-gcm@openssh.com
but offers them last, after AES-CTR, whose HMAC it computes separately for
every packet; with GCM one `cryptography` call encrypts and authenticates.
Tunnel bulk throughput over the test link: see README "Performance"
(`benchmarks/tunnel_throughput.py --ciphers aes128-ctr` measures the old
order). Servers without GCM get the next cipher on the list, as before.

`Ciphers` takes OpenSSH's forms: a list (only those, in that order), `+list`
(appended), `-list` (removed) or `^list` (moved first); names paramiko does
not know are left out (OpenSSH would refuse them; paramiko would raise).
"""

from __future__ import annotations

from collections.abc import Sequence

GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def offered(available: Sequence[str], configured: str = "") -> tuple[str, ...]:
    """The cipher list to offer, from paramiko's `available` ones and a `Ciphers` value ("" when unset)."""
    preferred = [name for name in GCM if name in available] + [name for name in available if name not in GCM]
    if not configured:
        return tuple(preferred)
    mode = configured[0] if configured[0] in "+-^" else ""
    names = [name.strip() for name in configured[len(mode):].split(",") if name.strip() in available]
    if mode == "-":
        chosen = [name for name in preferred if name not in names]
    elif mode == "+":
        chosen = preferred + [name for name in names if name not in preferred]
    elif mode == "^":
        chosen = names + [name for name in preferred if name not in names]
    else:
        chosen = names
    return tuple(dict.fromkeys(chosen)) or tuple(preferred)
