"""Logging in like OpenSSH: agent keys, identity files, keyboard-interactive, password.

The methods and their order follow ~/.ssh/config; each one tried is
recorded, so a failure is one line saying what was tried (and what was
skipped for want of a terminal) instead of paramiko's last exception.
"""

from __future__ import annotations

import base64
import getpass
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..errors import AuthenticationError
from ._paramiko import paramiko
from .config import Endpoint, shorten

MAX_AUTH_STEPS = 5  # partial successes (2-factor) before we give up
PASSWORD_PROMPTS = 3  # OpenSSH's NumberOfPasswordPrompts
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_METHODS = ("publickey", "keyboard-interactive", "password")


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
        if self.endpoint.option("identityagent").lower() == "none":
            return []
        try:
            self.agent = paramiko.Agent()
            return list(self.agent.get_keys())
        except (paramiko.SSHException, OSError):
            return []  # a stale SSH_AUTH_SOCK or an agent we cannot talk to: like no agent

    def _load_key(self, path: Path) -> paramiko.PKey | None:
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


__all__ = ["DEFAULT_IDENTITIES", "DEFAULT_METHODS", "MAX_AUTH_STEPS", "PASSWORD_PROMPTS", "Authenticator"]
