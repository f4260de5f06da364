"""Logging in like OpenSSH: Kerberos, agent keys, identity files and certificates, keyboard-interactive, password.

The methods and their order follow ~/.ssh/config; each one tried is
recorded, so a failure is one line saying what was tried (and what was
skipped for want of a way to ask) instead of paramiko's last exception.
Every question (passphrase, password, each keyboard-interactive prompt of
each round: a password, then a one-time code) goes to one prompt function
(prompts.py) and names user@host.
"""

from __future__ import annotations

import base64
import getpass
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..errors import AuthenticationError
from ..prompts import HOW_TO_ANSWER, Prompt
from ._paramiko import GSSAPI_METHOD, auth_gssapi_with_mic, auth_publickey_pipelined, paramiko
from .agent import open_agent
from .certs import CERT_SUFFIX, KEY_FIELDS, Certificate, is_certificate, parse
from .certs import read as read_certificate
from .config import Endpoint, shorten

MAX_AUTH_STEPS = 5  # partial successes (2-factor) before we give up
PASSWORD_PROMPTS = 3  # OpenSSH's NumberOfPasswordPrompts
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_METHODS = ("gssapi-with-mic", "publickey", "keyboard-interactive", "password")  # OpenSSH's order
#: Each method's ~/.ssh/config switch and OpenSSH's default for it.
SWITCHES = {"gssapi-with-mic": ("gssapiauthentication", False), "publickey": ("pubkeyauthentication", True),
            "keyboard-interactive": ("kbdinteractiveauthentication", True),
            "password": ("passwordauthentication", True)}
#: Seconds the server may stay silent while we wait for its answer to a login step, unless ServerAliveInterval
#: says otherwise: paramiko's own auth_timeout. Generous: a server may wait for a push-notification approval.
LOGIN_REPLY_TIMEOUT = 30.0
TOKEN_RE = re.compile(r"%(.)")

log = logging.getLogger("remote_http_launcher.ssh")


class SilenceWatch:
    """Closes the transport when the server stays silent for `limit` seconds while we wait for its answer.

    paramiko's auth_timeout counts the time a person takes to answer a question
    as the server's, and its expiry looks like a refusal; this watch is paused
    while a question is asked, and `fired` says the server stopped answering.
    """

    def __init__(self, transport: paramiko.Transport, limit: float) -> None:
        self.transport = transport
        self.limit = limit
        self.fired = False
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def waiting(self) -> None:
        """(Re)start the count: we now wait for the server."""
        with self._lock:
            self._cancel()
            self._timer = threading.Timer(self.limit, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def idle(self) -> bool:
        """Stop the count (we ask a question, or got the answer); whether it was running."""
        with self._lock:
            return self._cancel()

    def _cancel(self) -> bool:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return timer is not None

    def _fire(self) -> None:
        self.fired = True
        self.transport.close()


@dataclass
class Authenticator:
    """Logs in like OpenSSH: agent keys, identity files, keyboard-interactive, password.

    Questions (passphrases, passwords, 2-factor codes) go to `ask`; without
    it those steps are recorded as skipped, so a failure is one line listing
    everything that was tried and how to answer. Secrets never reach messages
    or logs.
    """

    endpoint: Endpoint
    transport: paramiko.Transport
    ask: Prompt | None
    allowed: set[str] | None = None  # the server's list, once a refusal has told us
    tried: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the certificates themselves say is wrong
    certificates: list[Certificate] | None = None  # CertificateFile's, once read
    offered_certificates: set[bytes] = field(default_factory=set)  # each one once, from the agent or a file
    kerberos_tried: bool = False
    kerberos_problem: str = ""  # why Kerberos could not be tried (no ticket, no pyspnego)
    unusable: int = 0  # agent keys of types paramiko cannot use
    unusable_types: list[str] = field(default_factory=list)
    pending_keys: Iterator[tuple[str, paramiko.PKey]] | None = None
    notice: str = ""  # shown before the next question (e.g. "Permission denied, please try again.")
    unanswered: BaseException | None = None  # why a question asked on paramiko's thread got no answer

    agent: paramiko.Agent | None = None
    watch: SilenceWatch = field(init=False)

    def __post_init__(self) -> None:
        alive = self.endpoint.option("serveraliveinterval")
        limit = self.endpoint.reply_timeout if alive and alive != "0" else LOGIN_REPLY_TIMEOUT
        self.watch = SilenceWatch(self.transport, limit)
        self.transport.auth_timeout = math.inf  # the watch bounds the server's silence, not the user's

    def run(self) -> None:
        try:
            for _ in range(MAX_AUTH_STEPS):
                if not self._round():
                    break
                if self.transport.is_authenticated():
                    return
            if self.kerberos_problem and self.allowed is None and self.transport.is_active():
                # Whether the server takes Kerberos decides what the error leads with: ask it (the "none" method)
                self._attempt("none", partial(self.transport.auth_none, self.endpoint.user))
                if self.transport.is_authenticated():
                    return
        finally:
            if self.agent is not None:
                self.agent.close()
        hint = f"; to answer password or code prompts, {HOW_TO_ANSWER}" \
            if any("skipped: no way to ask" in step for step in self.tried) else ""
        problems = list(self.problems)
        if self.kerberos_problem and self.allowed is not None and GSSAPI_METHOD in self.allowed:
            problems.insert(0, self.kerberos_problem)
        said = f": {'; '.join(problems)}" if problems else ""  # what the ticket and certificates say comes first
        tried = ", ".join(self.tried) or "nothing"
        # The label names an alias by its address: say whose login failed (a wrong `User` is a common cause)
        who = f" as {self.login}" if self.endpoint.alias != self.endpoint.hostname else ""
        raise self.endpoint.fail("auth", f"authentication failed{who}{said} (tried: {tried}){hint}",
                                 AuthenticationError)

    @property
    def login(self) -> str:
        """Who logs in where: questions name it (a jump chain asks for several hosts)."""
        return f"{self.endpoint.user}@{self.endpoint.hostname}"

    def _question(self, text: str, secret: bool) -> str:
        """Ask through `ask` (set: callers check), after any pending notice."""
        assert self.ask is not None
        notice, self.notice = self.notice, ""
        waiting = self.watch.idle()  # the person's time to answer is not the server's
        try:
            return self.ask(f"{notice}\n{text}" if notice else text, secret)
        finally:
            if waiting:
                self.watch.waiting()

    def _round(self) -> bool:
        """Try each method in order; True when one succeeded (fully, or partially for 2-factor)."""
        attempts: dict[str, Callable[[], bool]] = {
            GSSAPI_METHOD: self._gssapi, "publickey": self._publickey,
            "keyboard-interactive": self._keyboard_interactive, "password": self._password}
        for method in self._methods():
            if method in attempts and (self.allowed is None or method in self.allowed) and attempts[method]():
                return True
        return False

    def _methods(self) -> list[str]:
        preferred = self.endpoint.option("preferredauthentications")
        methods = [m.strip() for m in preferred.split(",")] if preferred else list(DEFAULT_METHODS)
        return [m for m in methods if m not in SWITCHES or self.endpoint.flag(*SWITCHES[m])]

    def _attempt(self, method: str, call: Callable[[], list[str]]) -> bool | None:
        """One request: True on (partial) success, False when refused, None when the method is not allowed."""
        self.watch.waiting()
        try:
            remaining = call()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            return self._refused(method, exc)
        finally:
            self.watch.idle()
        if not self.transport.is_authenticated():
            self.allowed = set(remaining)  # partial success: the server names the next factor
        return True

    def _refused(self, method: str, exc: BaseException) -> bool | None:
        """`_attempt`'s answer when the request raised: False (refused), None (method not allowed), or raise."""
        if self.watch.fired:  # a HostError, not an AuthenticationError: trying again later may well work
            raise self.endpoint.fail("auth", f"{method}: the server stopped answering (no reply within "
                                     f"{self.watch.limit:g} s)")
        if isinstance(exc, paramiko.BadAuthenticationType):
            self.allowed = set(exc.allowed_types)
            return None
        if isinstance(exc, paramiko.AuthenticationException):
            return False
        if self.unanswered is not None:
            reason = str(self.unanswered) or type(self.unanswered).__name__
            raise self.endpoint.fail("auth", f"{method}: a question was not answered ({reason})",
                                     AuthenticationError) from None
        if self.transport.is_active():
            raise self.endpoint.fail("auth", f"{method}: {exc}", AuthenticationError) from None
        raise self.endpoint.fail("auth", f"the server closed the connection (tried: {', '.join(self.tried)}); "
                                 "too many keys offered? set IdentityFile and 'IdentitiesOnly yes' for this "
                                 "host in ~/.ssh/config", AuthenticationError) from None

    # gssapi-with-mic
    def _gssapi(self) -> bool:
        """Kerberos, once: a missing ticket or package is not a reason to ask for a password; the error leads
        with it when the server takes Kerberos (a system ssh_config may say `GSSAPIAuthentication yes` for
        every host)."""
        if self.kerberos_tried:
            return False
        self.kerberos_tried = True
        from .kerberos import Unavailable, peer_address, server_name, start

        server = self.endpoint.option("gssapiserveridentity") or server_name(
            self.endpoint.hostname, peer_address(self.transport.sock), self.endpoint.flag("gssapitrustdns", False))
        context = start(server, self.endpoint.flag("gssapidelegatecredentials", False))
        if isinstance(context, Unavailable):
            if not context.skipped:  # the ticket cannot get this server's: as the server refusing it
                self.tried.append(f"{GSSAPI_METHOD} (host/{server}: {context.short})")
                log.debug("%s: %s as host/%s: %s", self.login, GSSAPI_METHOD, server, context.short)
                return False
            self.kerberos_problem = context.line
            self.tried.append(f"{GSSAPI_METHOD} (skipped: {context.short})")
            log.debug("%s: %s skipped: %s", self.login, GSSAPI_METHOD, self.kerberos_problem)
            return False
        said = ""

        def call() -> list[str]:
            nonlocal said
            try:
                return auth_gssapi_with_mic(self.transport, self.endpoint.user, context)
            except paramiko.BadAuthenticationType:
                raise
            except paramiko.AuthenticationException as exc:
                said = "" if str(exc) == "Authentication failed." else str(exc)
                raise

        log.debug("%s: %s as host/%s", self.login, GSSAPI_METHOD, server)
        result = self._attempt(GSSAPI_METHOD, call)
        if result is not None:
            self.tried.append(f"{GSSAPI_METHOD} (host/{server}{': ' + said if said else ''})")
        return bool(result)

    # publickey
    def _publickey(self) -> bool:
        """Offer the next keys; a later round (after a partial success) resumes where this one stopped."""
        if self.pending_keys is None:
            self.pending_keys = self._keys()
        for name, key in self.pending_keys:
            if name:
                self.tried.append(name)
            log.debug("%s: publickey: offering %s", self.login, name or f"agent key {key.get_name()}")
            result = self._attempt("publickey", partial(auth_publickey_pipelined, self.transport, self.endpoint.user,
                                                          key))
            if result is not False:
                return bool(result)
        return False

    def _keys(self) -> Iterator[tuple[str, paramiko.PKey]]:
        """Agent keys first, then identity files (each loaded, and decrypted, only when reached).

        Each key's valid certificates come just before it, as OpenSSH offers them: those the agent holds,
        `<IdentityFile>-cert.pub`, and every CertificateFile that certifies it.
        """
        files = self._identity_files()
        offered = self._agent_keys()
        ignored = ""
        if self.endpoint.flag("identitiesonly", False):
            wanted = {blob for blob in map(_public_blob, files) if blob}
            wanted |= {cert.key_blob for cert in self._certificates()}
            kept = [k for k in offered if _plain_blob(k) in wanted]
            ignored = f", {len(offered) - len(kept)} ignored: IdentitiesOnly" if len(kept) < len(offered) else ""
            offered = kept
        skipped = f", {self.unusable} skipped: {', '.join(self.unusable_types)}" if self.unusable else ""
        self.tried.append(f"agent ({len(offered)} keys{ignored}{skipped})")
        seen = {k.asbytes() for k in offered}
        beside = {blob: path for path in files if (blob := _public_blob(path))}  # an agent key's file, if any
        for key in offered:
            if is_certificate(key.get_name()):
                label = f"agent certificate {getattr(key, 'comment', '') or key.get_name()}"
                try:
                    cert = self._usable(parse(getattr(key, "blob", b""), label))
                except ValueError as exc:
                    self.tried.append(f"{label} (unusable: {exc})")
                    continue
                if cert is not None and cert.blob not in self.offered_certificates:
                    self.offered_certificates.add(cert.blob)
                    key.public_blob = cert.public_blob
                    yield "", key
                continue
            yield from self._with_certificates(key, "", beside.get(key.asbytes()))
        for path in files:
            if _public_blob(path) in seen:
                continue
            loaded = self._load_key(path)
            if loaded is not None and loaded.asbytes() not in seen:
                seen.add(loaded.asbytes())
                loaded.public_blob = None  # paramiko's own pick of <path>-cert.pub: offered below, if valid
                yield from self._with_certificates(loaded, shorten(path), path)

    def _with_certificates(self, key: paramiko.PKey, name: str,
                           path: Path | None = None) -> Iterator[tuple[str, paramiko.PKey]]:
        """`key` with each of its valid certificates, then alone."""
        beside = [self._read_certificate(Path(f"{path}-cert.pub"), beside=True)] if path is not None else []
        blob = key.asbytes()
        for cert in [*beside, *self._certificates()]:
            if cert is not None and cert.key_blob == blob and cert.blob not in self.offered_certificates \
                    and self._usable(cert) is not None:
                self.offered_certificates.add(cert.blob)
                key.public_blob = cert.public_blob
                yield cert.label, key
        key.public_blob = None
        yield name, key

    def _certificates(self) -> list[Certificate]:
        """The CertificateFile certificates (read once; those that cannot be read are noted and dropped)."""
        if self.certificates is None:
            self.certificates = []
            for path in certificate_files(self.endpoint):
                cert = self._read_certificate(path)
                if cert is not None:
                    self.certificates.append(cert)
        return self.certificates

    def _read_certificate(self, path: Path, beside: bool = False) -> Certificate | None:
        shown = shorten(path)
        try:
            return read_certificate(path, shown)
        except FileNotFoundError:
            if not beside:  # <IdentityFile>-cert.pub is looked for, not required
                self.tried.append(f"{shown} (missing)")
        except (OSError, ValueError) as exc:
            self.tried.append(f"{shown} (unusable: {exc})")
        return None

    def _usable(self, cert: Certificate) -> Certificate | None:
        """`cert` when a server could accept it for this login; else None, its problem noted for the error."""
        problem = cert.problem(self.endpoint.user)
        if not problem:
            return cert
        if problem not in self.problems:
            self.problems.append(problem)
            self.tried.append(f"{cert.label} (skipped: {problem.split('; ')[0].removeprefix('certificate ')})")
        return None

    def _identity_files(self) -> list[Path]:
        return identity_files(self.endpoint)

    def _agent_keys(self) -> list[paramiko.PKey]:
        """The agent's keys of types paramiko can sign with (the others, e.g. FIDO `sk-` keys, skipped)."""
        try:
            self.agent = open_agent(self.endpoint.option("identityagent"))
            keys = list(self.agent.get_keys()) if self.agent is not None else []
        except (paramiko.SSHException, OSError):
            return []  # a stale socket, or an agent we cannot talk to: like no agent
        usable: list[paramiko.PKey] = []
        for key in keys:
            if not _usable_type(key):
                log.debug("%s: agent key %s (%s): a type paramiko cannot use; skipped", self.login,
                          key.get_name(), getattr(key, "comment", ""))
                self.unusable += 1
                if key.get_name() not in self.unusable_types:
                    self.unusable_types.append(key.get_name())
            else:
                usable.append(key)
        return usable

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
        if self.ask is None:
            self.tried.append(f"{shown} (encrypted, skipped: no way to ask for the passphrase)")
            return None
        for _ in range(PASSWORD_PROMPTS):
            try:
                passphrase = self._question(f"({self.login}) Enter passphrase for key '{shown}': ", True)
            except Exception:  # no answer: like an empty passphrase
                break
            if not passphrase:
                break
            try:
                # bytes, though annotated str: paramiko hands it to cryptography, which wants bytes
                return paramiko.PKey.from_path(path, password=passphrase.encode())  # type: ignore[arg-type]
            except (paramiko.SSHException, ValueError):
                self.notice = "Bad passphrase, try again."
        self.tried.append(f"{shown} (encrypted, no passphrase)")
        return None

    # keyboard-interactive and password
    def _keyboard_interactive(self) -> bool:
        shown = 0

        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            nonlocal shown
            shown += len(prompts)
            header = "".join(f"{text.strip()}\n" for text in (title, instructions) if text.strip())
            answers = []
            try:
                for index, (prompt, echo) in enumerate(prompts):
                    answers.append(self._question(f"{header if index == 0 else ''}({self.login}) {prompt}", not echo))
            except BaseException as exc:  # raised on paramiko's thread, which then drops the connection
                self.unanswered = exc
                raise
            return answers

        return self._prompted("keyboard-interactive", lambda: self.transport.auth_interactive(
            self.endpoint.user, answer), lambda: shown > 0)

    def _password(self) -> bool:
        return self._prompted("password", lambda: self.transport.auth_password(
            self.endpoint.user, self._question(f"{self.login}'s password: ", True), fallback=False))

    def _prompted(self, method: str, call: Callable[[], list[str]],
                  prompted: Callable[[], bool] = lambda: True) -> bool:
        """Up to PASSWORD_PROMPTS attempts; a refusal without any prompt is not worth repeating."""
        if self.ask is None:
            self.tried.append(f"{method} skipped: no way to ask")
            return False
        log.debug("%s: %s", self.login, method)
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
            self.notice = "Permission denied, please try again."
        return False


def identity_files(endpoint: Endpoint) -> list[Path]:
    """The key files a login offers: `IdentityFile` as configured (`none`: none), else the default ones that exist."""
    configured = endpoint.options.get("identityfile")
    if configured:
        names = [configured] if isinstance(configured, str) else list(configured)
        if any(name.lower() == "none" for name in names):
            return []
        return [Path(os.path.expanduser(name)) for name in names]
    return [p for p in (Path(os.path.expanduser(name)) for name in DEFAULT_IDENTITIES) if p.exists()]


def certificate_files(endpoint: Endpoint) -> list[Path]:
    """The CertificateFile paths, each with the `%` tokens OpenSSH expands in it, then `~`."""
    host = socket.gethostname()
    tokens = {"%": "%", "d": str(Path.home()), "h": endpoint.hostname, "l": host, "L": host.split(".")[0],
              "n": endpoint.alias, "p": str(endpoint.port), "r": endpoint.user, "u": getpass.getuser()}
    return [Path(os.path.expanduser(TOKEN_RE.sub(lambda match: tokens.get(match.group(1), match.group(0)), value)))
            for value in endpoint.values("certificatefile")]


def _usable_type(key: paramiko.PKey) -> bool:
    """Whether paramiko can log in with an agent key: a type it knows, or a certificate of one."""
    if getattr(key, "inner_key", key) is not None:
        return True
    name = key.get_name()
    return is_certificate(name) and name.removesuffix(CERT_SUFFIX) in KEY_FIELDS and not name.startswith("sk-")


def _plain_blob(key: paramiko.PKey) -> bytes:
    """The public key an agent entry stands for: a certificate's certified key, else the key itself."""
    if is_certificate(key.get_name()):
        try:
            return parse(getattr(key, "blob", b""), "").key_blob
        except ValueError:
            return b""
    return key.asbytes()


def _public_blob(path: Path) -> bytes | None:
    """The public key of an identity file, from its .pub companion (so no passphrase is needed)."""
    try:
        fields = Path(f"{path}.pub").read_text().split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError):
        return None


__all__ = ["DEFAULT_IDENTITIES", "DEFAULT_METHODS", "MAX_AUTH_STEPS", "PASSWORD_PROMPTS", "SWITCHES", "Authenticator",
           "certificate_files", "identity_files"]
