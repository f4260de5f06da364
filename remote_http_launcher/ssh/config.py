"""~/.ssh/config, read and resolved the way OpenSSH would: users already describe their hosts there.

`load_ssh_config` reads ~/.ssh/config and then /etc/ssh/ssh_config as ssh
does (first obtained value wins across both), expanding `Include` itself,
since paramiko's SSHConfig does not, and dropping the options this tool
does not use (a debug-log line each) before paramiko parses the result.
`resolve` turns a host name or alias into an Endpoint (address, port, user
and the options that apply), which every later step asks for its settings
and uses to name the server in messages.
"""

from __future__ import annotations

import getpass
import glob
import logging
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HostError, near_miss
from ._paramiko import MATCH_EXEC_RE, allow_match_exec, paramiko, user_ssh_config

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_REPLY_TIMEOUT = 15.0  # a server silent this long while we wait for it is gone
DEFAULT_ALIVE_COUNT = 3  # OpenSSH's ServerAliveCountMax
HOP_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+))(?::(?P<port>\d+))?$")

#: The system-wide file, read after the user's. Relative `Include` paths in it are relative to its
#: directory (/etc/ssh, OpenSSH's SSHDIR). Looked up on each load, so tests can point it elsewhere.
SYSTEM_SSH_CONFIG = Path("/etc/ssh/ssh_config")
MAX_INCLUDE_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH: nested Includes beyond this are an error (a loop)
#: The options something in ssh/ reads (Endpoint.option/flag/options.get): the others are dropped while
#: reading, with a debug-log line each, so that paramiko acts on none of them (e.g. CanonicalizeHostname).
SUPPORTED_OPTIONS = frozenset({
    "hostname", "user", "port", "identityfile", "identitiesonly", "identityagent", "proxyjump", "proxycommand",
    "connecttimeout", "serveraliveinterval", "serveralivecountmax", "stricthostkeychecking",
    "userknownhostsfile", "globalknownhostsfile", "hostkeyalias", "hashknownhosts", "compression",
    "preferredauthentications", "pubkeyauthentication", "kbdinteractiveauthentication", "passwordauthentication",
    "ciphers", "certificatefile", "gssapiauthentication", "gssapidelegatecredentials", "gssapiserveridentity",
    "gssapitrustdns",
})
#: Why some options OpenSSH builds may have are ignored, for their debug-log line.
IGNORED_BECAUSE = dict.fromkeys(
    ("gssapikeyexchange", "gssapikexalgorithms", "gssapirenewalforcesrekey"),
    "Kerberos key exchange, a Debian and Fedora patch to OpenSSH; Kerberos logs in by gssapi-with-mic with "
    "GSSAPIAuthentication yes")
#: Options OpenSSH accumulates over every line that applies, where paramiko keeps the first: each line
#: goes to paramiko under a numbered name of its own (`certificatefile_00003`), read back by Endpoint.values.
ACCUMULATED_OPTIONS = frozenset({"certificatefile"})
OPTION_ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}  # OpenSSH's own aliases
#: The `Match` criteria paramiko evaluates; a block with another one (tagged, localnetwork, ...) never applies.
MATCH_CRITERIA = frozenset({"all", "canonical", "final", "host", "originalhost", "user", "localuser", "exec"})
SETTING_RE = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")  # `Keyword value` or `Keyword=value`, as paramiko splits it

log = logging.getLogger("remote_http_launcher.ssh")


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

    @property
    def alive_interval(self) -> float:
        """Seconds between the requests that check the server still answers: ServerAliveInterval when
        set; else the reply timeout's share of DEFAULT_ALIVE_COUNT (ssh itself would not check)."""
        try:
            interval = float(self.option("serveraliveinterval") or 0)
        except ValueError:
            interval = 0.0
        return interval if interval > 0 else self.reply_timeout / DEFAULT_ALIVE_COUNT

    @property
    def silence_bound(self) -> float:
        """Seconds within which the alive check (connection.SSHConnection) closes a connection whose server
        went silent: one interval to the next request, then the reply timeout."""
        return self.alive_interval + self.reply_timeout

    def option(self, name: str, default: str = "") -> str:
        return str(self.options.get(name, default)).strip()

    def values(self, name: str) -> list[str]:
        """Every value of an ACCUMULATED_OPTIONS option, in the order ssh reads them."""
        prefix = f"{name}_"
        return [str(value).strip() for key, value in sorted(self.options.items()) if key.startswith(prefix)]

    def flag(self, name: str, default: bool) -> bool:
        value = self.option(name).lower()
        return default if not value else value in ("yes", "true")

    def fail(self, step: str, detail: str, kind: type[HostError] = HostError) -> HostError:
        """`LABEL: STEP: DETAIL`, with this server as the error's `host` and the step as its `step`."""
        return kind(f"{self.label}: {step}: {detail}", host=self.alias, step=step)


def load_ssh_config(overrides: Sequence[str] = (), sources: list[str] | None = None) -> paramiko.SSHConfig:
    """~/.ssh/config, then /etc/ssh/ssh_config, with their Includes, as one paramiko SSHConfig.

    Missing files count as empty. `Match exec` lines (in any file read) get
    the invoke that paramiko was loaded without. `overrides` are option lines
    (`StrictHostKeyChecking accept-new`) that win over both files for every
    host, as `ssh -o` does. `sources`, if given, gets the paths of the two
    files and of every file included, or is left empty when a `Match exec`
    line makes the result depend on more than files (dialahead.py's key).
    """
    path = user_ssh_config()
    reader = _Reader()
    reader.lines.extend(overrides)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise HostError(f"ssh config {shorten(path)}: {exc}", step="ssh config") from None
        reader.read(path, text, (), depth=0, user=True)
    system = SYSTEM_SSH_CONFIG
    if system.is_file():
        try:
            text = system.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:  # ssh, too, skips a system file it cannot open
            log.debug("ssh config %s: %s; skipped", system, exc)
        else:
            reader.read(system, text, (), depth=0, user=False)
    for exec_path in reader.match_exec:
        allow_match_exec(exec_path)
    if sources is not None and not reader.match_exec:
        sources += [str(path), str(system), *map(str, reader.included)]
    if not reader.lines:
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_text("\n".join(reader.lines))
    except (ValueError, paramiko.SSHException) as exc:  # not expected: the reader checked every line
        raise HostError(f"ssh config {shorten(path)}: {exc}", step="ssh config") from None


@dataclass(eq=False)
class _Block:
    """A `Host` or `Match` line; compared by identity (two blocks with the same text are still two)."""

    line: str
    is_host: bool
    #: What it matches as paramiko `Match` words (a Host line as `originalhost PATTERNS`).
    criteria: list[str]
    never: bool = False  # a Match criterion paramiko cannot evaluate: the block applies to no host

    def without_all(self) -> list[str]:
        return [word for word in self.criteria if word.lower() not in ("all", "!all")]


@dataclass
class _Reader:
    """The lines of the files read so far, Includes inlined, in the order OpenSSH processes them.

    Each option line is emitted under the block chain it belongs to: the
    enclosing blocks of the Include lines that led to its file, then the
    file's own current Host/Match block. A header line is emitted whenever
    that chain changes: the block's own line for a single block, `Host *`
    for none (the top level), a `Match` joining the criteria of all of them
    for a nested chain (an included file's Host line inside a Host/Match
    block applies only where both match, as in OpenSSH).
    """

    lines: list[str] = field(default_factory=list)
    emitted: tuple[_Block, ...] = ()  # the chain the last header line opened (() before any: the top level)
    match_exec: list[Path] = field(default_factory=list)  # files with a `Match exec` line
    included: list[Path] = field(default_factory=list)  # files read for Include lines
    accumulated: int = 0  # lines of ACCUMULATED_OPTIONS so far: their numbers

    def read(self, path: Path, text: str, outer: tuple[_Block, ...], depth: int, user: bool) -> None:
        if path not in self.match_exec and MATCH_EXEC_RE.search(text):
            self.match_exec.append(path)
        chain = outer
        skip = any(block.never for block in chain)
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = SETTING_RE.match(line)
            if not match:
                raise _config_error(path, f"Unparsable line {line}")
            written, value = match.group(1), match.group(2)
            keyword = OPTION_ALIASES.get(written.lower(), written.lower())
            if keyword in ("host", "match"):
                chain = (*outer, _block(keyword, value, line, path, number))
                skip = any(block.never for block in chain)
            elif keyword == "include":
                self.include(value, chain, path, number, depth, user)
            elif keyword not in SUPPORTED_OPTIONS:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("ssh config %s line %d: %s is not supported; ignored%s", shorten(path), number, written,
                              f" ({IGNORED_BECAUSE[keyword]})" if keyword in IGNORED_BECAUSE else "")
            elif not skip:
                if chain != self.emitted:
                    self.lines.append(_header(chain))
                    self.emitted = chain
                if keyword in ACCUMULATED_OPTIONS:
                    self.accumulated += 1
                    keyword = f"{keyword}_{self.accumulated:05d}"
                self.lines.append(f"{keyword} {value}")

    def include(self, value: str, chain: tuple[_Block, ...], path: Path, number: int, depth: int,
                user: bool) -> None:
        """Read the files an `Include` line names (each a glob, relative to ~/.ssh or /etc/ssh) in place."""
        where = f"ssh config {shorten(path)} line {number}"
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise HostError(f"{where}: Include: {exc}", step="ssh config") from None
        base = Path.home() / ".ssh" if user else SYSTEM_SSH_CONFIG.parent
        for word in words:
            if word.startswith("#"):
                break  # a comment ends the line
            if word.startswith("~") and not user:
                raise HostError(f"{where}: bad include path {word} (no ~ in the system file)", step="ssh config")
            pattern = os.path.expanduser(word if word.startswith("~") or os.path.isabs(word) else str(base / word))
            found = sorted(glob.glob(pattern))
            if not found:
                log.debug("%s: Include %s matched no files", where, pattern)
                continue
            if depth >= MAX_INCLUDE_DEPTH:
                raise HostError(f"{where}: Include {word}: more than {MAX_INCLUDE_DEPTH} nested Includes "
                                "(does a file include itself?)", step="ssh config")
            for name in found:
                included = Path(name)
                if not included.is_file():
                    continue  # a directory matched by the glob: ssh reads nothing from it either
                try:
                    text = included.read_text(encoding="utf-8", errors="surrogateescape")
                except OSError as exc:
                    raise HostError(f"{where}: Include: {exc}", step="ssh config") from None
                self.included.append(included)
                self.read(included, text, chain, depth + 1, user)


def _block(keyword: str, value: str, line: str, path: Path, number: int) -> _Block:
    """A Host or Match line, checked as paramiko would (with the same messages), naming the file."""
    if keyword == "host":
        try:
            patterns = _split(value)
        except ValueError:
            raise _config_error(path, f"Unparsable host {value}") from None
        return _Block(line, True, ["originalhost", ",".join(patterns)])
    try:
        words = _split(value)
    except ValueError as exc:
        raise _config_error(path, str(exc)) from None
    criteria: list[str] = []
    kinds: list[str] = []
    unsupported = ""
    while words:
        word = words.pop(0)
        kind = word.lstrip("!").lower()
        criteria.append(word[:len(word) - len(kind)] + kind)
        kinds.append(kind)
        if kind not in MATCH_CRITERIA:
            unsupported = unsupported or kind
        if kind in ("all", "canonical", "final"):
            continue
        if not words:
            raise _config_error(path, f"Missing parameter to Match '{kind}' keyword")
        criteria.append(words.pop(0))
    if "all" in kinds:
        if any(kind not in ("all", "canonical") for kind in kinds):
            raise _config_error(path, "Match does not allow 'all' mixed with anything but 'canonical'")
        if "canonical" in kinds and kinds.index("canonical") > kinds.index("all"):
            raise _config_error(path, "Match does not allow 'all' before 'canonical'")
    if unsupported:
        log.debug("ssh config %s line %d: Match %s is not supported; the block applies to no host",
                  shorten(path), number, unsupported)
    return _Block(line, False, criteria, never=bool(unsupported))


def _config_error(path: Path, detail: str) -> HostError:
    return HostError(f"ssh config {shorten(path)}: {detail}", step="ssh config")


def _split(value: str) -> list[str]:
    """Words as paramiko splits Host and Match lines (shlex), without shlex's cost when nothing is quoted."""
    return shlex.split(value) if any(char in value for char in "\"'\\") else value.split()


def _header(chain: tuple[_Block, ...]) -> str:
    """The Host/Match line that opens `chain` for paramiko."""
    if not chain:
        return "Host *"
    if len(chain) == 1:
        block = chain[0]
        return block.line if block.is_host else shlex.join(["Match", *block.criteria])
    words = [word for block in chain for word in block.without_all()]
    return shlex.join(["Match", *words]) if words else "Match all"


def resolve(config: paramiko.SSHConfig, host: str, user: str | None = None, port: int | None = None) -> Endpoint:
    """Apply ~/.ssh/config to a host name; explicit user and port win over it."""
    try:
        options = dict(config.lookup(host))
    except ImportError:  # paramiko runs `Match exec` lines with invoke
        raise HostError(f"ssh {host}: ssh config: a Match exec line needs the Python package 'invoke' "
                        "(pip install invoke)", host=host, step="ssh config") from None
    try:
        config_port = int(options.get("port", DEFAULT_PORT))
    except ValueError:
        raise HostError(f"ssh {host}: ~/.ssh/config: Port {options['port']!r} is not a number", host=host,
                        step="ssh config") from None
    return Endpoint(alias=host, hostname=str(options.get("hostname", host)), port=port or config_port,
                    user=user or str(options.get("user") or getpass.getuser()), options=options)


def misspelt_alias(config: paramiko.SSHConfig, endpoint: Endpoint) -> str:
    """For a name that does not resolve and is no Host of ~/.ssh/config (nothing gave it a HostName): the
    Host it likely misspells, as a clause to add to the error; "" when none is close."""
    if endpoint.hostname != endpoint.alias:
        return ""
    close = near_miss(endpoint.alias, [name for name in config.get_hostnames() if not set(name) & set("*?!")])
    return f"; not a Host in ~/.ssh/config; did you mean {close}?" if close else ""


def parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` (IPv6 in brackets) from a ProxyJump list."""
    match = HOP_RE.match(spec.strip())
    if not match:
        raise HostError(f"ProxyJump: cannot parse jump host {spec!r} (expected [user@]host[:port])",
                        step="ProxyJump")
    port = match.group("port")
    return match.group("user"), match.group("v6") or match.group("host"), int(port) if port else None


__all__ = ["ACCUMULATED_OPTIONS", "DEFAULT_ALIVE_COUNT", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_PORT",
           "DEFAULT_REPLY_TIMEOUT", "HOP_RE", "IGNORED_BECAUSE", "MATCH_CRITERIA", "MAX_INCLUDE_DEPTH",
           "OPTION_ALIASES", "SETTING_RE", "SUPPORTED_OPTIONS", "SYSTEM_SSH_CONFIG", "Endpoint", "load_ssh_config",
           "misspelt_alias", "parse_hop", "resolve", "shorten"]
