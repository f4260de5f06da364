"""Host keys, checked against known_hosts with OpenSSH's policy (a changed key is always refused).

The files, the names looked up, the unknown-key question and every message
follow OpenSSH, so users can act on them with the tools they know
(ssh-keygen -R); an unknown key is recorded under the name OpenSSH looks up
(HostKeyAlias, host, or [host]:port).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import statefiles
from ..errors import HOST_KEY_ADVICE, HostKeyError
from ..prompts import Prompt
from ._paramiko import paramiko
from .config import Endpoint, shorten

DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
STRICT_MODES = {"yes": "yes", "true": "yes", "ask": "ask", "accept-new": "accept-new",
                "no": "no", "off": "no", "false": "no"}
RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
#: What `--accept-new-host-key` (run(accept_new_host_key=True)) puts before ~/.ssh/config.
ACCEPT_NEW = "StrictHostKeyChecking accept-new"


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

    def record(self, key: paramiko.PKey) -> None:
        """Append the key to the first UserKnownHostsFile (file 0600, directory 0700 when created)."""
        self.record_path.parent.mkdir(mode=statefiles.DIR_MODE, parents=True, exist_ok=True)
        host = paramiko.HostKeys.hash_host(self.name) if self.hash_names else self.name
        path = self.record_path
        separator = "\n" if path.is_file() and path.read_bytes()[-1:] not in (b"", b"\n") else ""
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, statefiles.FILE_MODE), "a") as handle:
            handle.write(f"{separator}{host} {key.get_name()} {key.get_base64()}\n")
        self.entries.append((self.record_path, key))


def _paths(value: str) -> list[Path]:
    return [Path(os.path.expanduser(item)) for item in value.split()]


def check_host_key(endpoint: Endpoint, key: paramiko.PKey, known: KnownHosts, ask: Prompt | None) -> None:
    """OpenSSH's policy, except that a changed key is refused whatever StrictHostKeyChecking says. A host
    with a known key of any type is not new: a key it did not have before, even of another type (a server
    that no longer offers the known type), is a changed key, as OpenSSH's accept-new says."""
    if known.matches(key):
        return
    if known.entries:
        path, old = next(((p, k) for p, k in known.entries if k.get_name() == key.get_name()), known.entries[0])
        raise endpoint.fail("host key", f"HOST KEY FOR {known.name} HAS CHANGED: the server sent "
                            f"{key_description(key)} but {shorten(path)} has {key_description(old)}; someone may be "
                            "intercepting the connection, or the server was reinstalled (then remove the old "
                            f"key with: ssh-keygen -R {shlex.quote(known.name)})", HostKeyError)
    mode = STRICT_MODES.get(endpoint.option("stricthostkeychecking", "ask").lower(), "ask")
    if mode in ("accept-new", "no") or (mode == "ask" and ask and ask_unknown_key(endpoint, key, known, ask)):
        known.record(key)
        return
    if mode == "ask" and ask:
        raise endpoint.fail("host key", f"{key_description(key)} for {known.name} not accepted", HostKeyError)
    reason = "StrictHostKeyChecking is yes" if mode == "yes" else "no terminal or prompt= to ask"
    # Not ssh-keyscan: it names keys host or [host]:port, never a HostKeyAlias, and Windows lacks it.
    raise endpoint.fail("host key", f"unknown {key_description(key)} for {known.name} ({reason}); if that is the "
                        f"server's fingerprint, run again with {HOST_KEY_ADVICE} to record it in "
                        f"{shorten(known.record_path)} as {known.name}",
                        HostKeyError)


def ask_unknown_key(endpoint: Endpoint, key: paramiko.PKey, known: KnownHosts, ask: Prompt) -> bool:
    """OpenSSH's question: yes, or the fingerprint itself, accepts the key; no answer refuses it."""
    prompt = (f"The authenticity of host '{endpoint.alias} ({endpoint.hostname}:{endpoint.port})' can't be "
              f"established.\n{key_type_label(key)} key fingerprint is {key.fingerprint}."
              f"\nAre you sure you want to continue connecting to {endpoint.user}@{endpoint.hostname} "
              "(yes/no/[fingerprint])? ")
    while True:
        try:
            answer = ask(prompt, False).strip()
        except Exception:  # no answer
            return False
        if answer.lower() == "yes" or answer == key.fingerprint:
            return True
        if answer.lower() in ("no", ""):
            return False
        prompt = "Please type 'yes', 'no' or the fingerprint: "


__all__ = ["ACCEPT_NEW", "DEFAULT_GLOBAL_KNOWN_HOSTS", "DEFAULT_USER_KNOWN_HOSTS", "RSA_SIGNATURES", "STRICT_MODES",
           "KnownHosts", "ask_unknown_key", "check_host_key", "key_description", "key_type_label"]
