"""Load and validate a service configuration.

Validation happens before anything is touched: every problem is reported as a
one-line `ConfigError` that names the field and says what to write instead, so
a bad config never starts a process or writes a file. `config.schema.yaml`
states the same rules for editors; its patterns are the `*_PATTERN` constants
below (tests/test_schema.py checks that both stay identical and agree on a
corpus of broken configs).
"""

from __future__ import annotations

import os

from . import jsontext, statefiles
from .errors import ConfigError, near_miss
from .progress import LEVELS
from .records import MappingProxy, NamedTuple, cache

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any
else:  # collections.abc's own module, loaded with the interpreter (collections.abc imports collections)
    from _collections_abc import Mapping

DEFAULT_NETWORK_INTERFACE = "localhost"
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_WATCHDOG_INTERVAL = 5.0
DEFAULT_CONNECTION_PERSIST = 600.0
DEFAULT_QUEUE_TIMEOUT = 600.0
SCHEDULER_FIELDS = ("type", "options", "queue_timeout", "renew_before")
# With a scheduler the service runs on a compute node and is reached from the login node, so it must not
# listen on loopback only; this is its default interface.
SCHEDULER_NETWORK_INTERFACE = "0.0.0.0"
# Names and addresses only the host itself reaches, and all of 127.0.0.0/8 (is_loopback).
LOOPBACK_INTERFACES = ("localhost", "ip6-localhost", "::1")
LOOPBACK_PREFIX = "127."
MAX_SCHEDULER_OPTIONS = 100
MAX_SETUP_LINES = 100
MAX_SETUP_LINE = 10_000
MAX_FIELD_NAME = 256
MAX_PATH = 4096
MAX_KEY_TEMPLATE = 1000
KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_KEY = 200
MAX_COMMAND_TEMPLATE = 10_000
MAX_HANDSHAKE_PATH = 2048
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_FILE_PARAMETERS_VALUES = 100_000
MAX_RECORD_DATA_JSON = statefiles.MAX_STATE_BYTES // 2  # file_parameters and meta: their state files are capped
CACHE_NAME_DIGITS = 16  # of a parse cache's name: paths that collide only evict each other's parse
MAX_CONFIG_BYTES = 2**20  # a config file; large data belongs in a file the service reads
MAX_FIELD_CHARS = 1_000_000  # the strings of one field, added up
MAX_NESTING = 100
MAX_INT_DIGITS = 4300  # Python's own limit for converting between int and str
PORT_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
# A stock server (one that writes no status file) reads `{port}` in its command: the launch chooses that port
# on the service's host, within port_start-port_end (these by default), as every other `{NAME_port}` it reads.
STOCK_PORT = "port"
STOCK_PORT_SUFFIX = "_port"
DEFAULT_PORT_RANGE = (20000, 29999)  # below Linux's ephemeral range (32768-60999), above common services
MAX_PORT = 65535
MAX_URL_PATTERN = 1000
# Fields that configure the launcher itself, as in the original: not template variables.
LOG_FIELDS = ("log_level", "log_file", "debug_log_file")

REQUIRED_FIELDS = ("workdir", "key", "command")
OPTIONAL_FIELDS = ("hostname", "ssh_hostname", "network_interface", "tunnel", "handshake", "conda", "setup",
                   "file_parameters", "meta", "startup_timeout", "watchdog_interval", "connection_persist",
                   "reconnect_timeout", "scheduler", "port_start", "port_end", "url_pattern", "local_port")
# Every other field is a template variable, as in the original. One no template reads is a mistake: a
# near miss of a launcher field (`tunel`) is refused, which would otherwise run without a tunnel.
FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS, *LOG_FIELDS)
# What a template is told when it reads a name it cannot: the ports are chosen by the launch, after the key.
KEY_HINTS = {STOCK_PORT: f"{{{STOCK_PORT}}} is known in command only: the port the launch chooses for a server "
                         "that writes no status file (see the docs' Stock servers page)"}
COMMAND_HINTS = {STOCK_PORT: ""}  # a name for did-you-mean: a command reading it gets it
REQUIRED_HINTS = {
    "workdir": "set it to the service's working directory (an absolute path or ~/...)",
    "key": "set it to a template naming the state files, e.g. 'myservice' or 'myservice-{network_interface}'",
    "command": "set it to the command that starts the service, e.g. 'myservice --status-file {status_file}'",
}

# The patterns below are copied verbatim into config.schema.yaml. They avoid
# backslashes so that they read the same in YAML, Python and ECMA-262.
_LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME_PATTERN = f"{_LABEL}(?:[.]{_LABEL})*"
_H16 = "[0-9A-Fa-f]{1,4}"
IPV6_PATTERN = "(?:" + "|".join([  # RFC 4291 text forms, without zone identifiers or embedded IPv4
    f"(?:{_H16}:){{7}}{_H16}",
    f"(?:{_H16}:){{1,7}}:",
    *(f"(?:{_H16}:){{1,{left}}}(?::{_H16}){{1,{7 - left}}}" for left in range(6, 0, -1)),
    f":(?:(?::{_H16}){{1,7}}|:)",
]) + ")"
HOST_PATTERN = f"^(?=.{{1,253}}$)(?:{HOST_NAME_PATTERN}|{IPV6_PATTERN})$"
SSH_HOST_PATTERN = f"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,63}}@)?(?=.{{1,253}}$)(?:{HOST_NAME_PATTERN}|{IPV6_PATTERN})$"
# One `--flag` or `--flag=value` argv word of the scheduler's submit command (a value may hold spaces).
SCHEDULER_OPTION_PATTERN = "^--[A-Za-z][A-Za-z0-9-]*(?:=.+)?$"


class SchedulerOptions(NamedTuple):
    """How one scheduler type's submit options (`scheduler.options`) are written, and the flags its
    submission sets itself (log, job name, working directory, how the job id is read) or cannot work with,
    which an option must not take over."""

    word: str  # every word matches this pattern (config.schema.yaml has it too)
    advice: str  # what one is and how to write it, for the error ("is not ADVICE")
    reserved: tuple[str, ...]  # flag names; a long one's abbreviation (getopt's `--out`) is refused too
    # Whether a short flag's value may be attached (getopt's `-Nname`, so `-N...` is refused); False: every flag
    # is a word of its own (Grid Engine's `-now`, `-terse`), refused only as that exact word.
    attached: bool = True


# The scheduler types, each with its options' rules.
SCHEDULER_OPTIONS = {
    "slurm": SchedulerOptions(
        SCHEDULER_OPTION_PATTERN, "one '--flag' or '--flag=value' word; write e.g. '--partition=short', not "
        "'-p short' or '--partition short'",
        ("--output", "--error", "--job-name", "--chdir", "--open-mode", "--parsable", "--wrap", "--wait")),
    "pbs": SchedulerOptions(
        "^.+$", "one word of qsub's arguments (a flag and its value are two words, e.g. '-l', "
        "'walltime=08:00:00')",
        # output, its joining and keeping, name, working directory (Torque's -d and -w, the wrappers' -wd),
        # root directory, the job's shell and arguments, interactive jobs
        ("-o", "-e", "-j", "-k", "-N", "-d", "-w", "-D", "-S", "-F", "-I", "-X")),
    "sge": SchedulerOptions(
        "^.+$", "one word of qsub's arguments (a flag and its value are two words, e.g. '-l', 'h_rt=08:00:00')",
        # output and its joining, name, the job's shell and script handling (binary, directive prefix, stdin),
        # and what changes what qsub prints or when it returns
        ("-o", "-e", "-j", "-N", "-S", "-C", "-b", "-i", "-terse", "-sync", "-now", "-shell"), attached=False),
    "oar": SchedulerOptions(
        "^.+$", "one word of oarsub's arguments (a flag and its value are two words, e.g. '-l', "
        "'walltime=08:00:00')",
        # output, name, working directory, reading the script's #OAR lines, interactive and array jobs
        ("-O", "--stdout", "-E", "--stderr", "-n", "--name", "-d", "--directory", "-S", "--scanscript", "-I",
         "--interactive", "-C", "--connect", "--array", "--array-param-file")),
}
SCHEDULER_TYPES = tuple(SCHEDULER_OPTIONS)
CONDA_PATTERN = "^(?:[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}|/[A-Za-z0-9_.+,@%=:~/-]{0,4095})$"
WORKDIR_PATTERN = "^(?:/|~/|~$)"
# Characters refused in single-line values, and in handshake paths.
CONTROL_PATTERN = r"[\u0000\n\r]"
URL_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")  # RFC 3986
HANDSHAKE_PATH_SAFE = "/:@!$&'()*+,;=-._~%"  # kept as written in a handshake path (a path may be pre-encoded)
HANDSHAKE_REFUSED_PATTERN = r"[\s?#]"
# The patterns are the reference (the schema's, and tests/test_config.py compares the checks below with them
# on generated strings); a config is checked by the string methods below, as `re` with the `enum` it imports
# costs a first launch as much as its interpreter's own start-up. `re` is imported only for a scheduler's
# options and a url_pattern. For the same reason the value classes here and on the warm path are
# NamedTuples, not frozen dataclasses (whose module, with `inspect`, costs more than the warm path's own code).
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_WORD_CHARS = _ASCII_LETTERS | frozenset("0123456789_")
_LABEL_CHARS = _WORD_CHARS | {"-"}
_USER_CHARS = _LABEL_CHARS | {"."}
_HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")
_CONDA_NAME_CHARS = _WORD_CHARS | frozenset(".+-")
_CONDA_PATH_CHARS = _WORD_CHARS | frozenset(".+,@%=:~/-")
_MAX_LABEL = 63
_MAX_HOST = 253
_MAX_USER = 64
_MAX_PORT_NAME = 64
_MAX_CONDA_NAME = 255
_MAX_CONDA_PATH = 4096
_IPV6_GROUPS = 8
_MAX_H16 = 4


def has_control(text: str) -> bool:
    """CONTROL_PATTERN: a NUL or a line break."""
    return "\0" in text or "\n" in text or "\r" in text


def is_absolute_workdir(text: str) -> bool:
    """WORKDIR_PATTERN (`re.match`; its `$` also matches before a final newline)."""
    return text.startswith(("/", "~/")) or text in ("~", "~\n")


def is_host(text: str) -> bool:
    """HOST_PATTERN: a host name of labels, or an IPv6 address in RFC 4291's text forms (fullmatch)."""
    return 1 <= len(text) <= _MAX_HOST and (_is_host_name(text) or _is_ipv6(text))


def is_ssh_host(text: str) -> bool:
    """SSH_HOST_PATTERN: `[user@]host` (fullmatch)."""
    user, at, host = text.partition("@")
    if not at:
        return is_host(text)
    return 1 <= len(user) <= _MAX_USER and user[0] in _WORD_CHARS and _only(user, _USER_CHARS) and is_host(host)


def _is_host_name(text: str) -> bool:
    return all(1 <= len(label) <= _MAX_LABEL and label[0] in _WORD_CHARS and label[-1] in _WORD_CHARS
               and _only(label, _LABEL_CHARS) for label in text.split("."))


def _is_ipv6(text: str) -> bool:
    """Groups of 1-4 hex digits: 8, or fewer around one `::` (which stands for one or more zero groups)."""
    head, elided, tail = text.partition("::")
    groups = [*(head.split(":") if head or not elided else []), *(tail.split(":") if tail else [])]
    if not all(1 <= len(group) <= _MAX_H16 and _only(group, _HEX_DIGITS) for group in groups):
        return False
    return len(groups) < _IPV6_GROUPS if elided else len(groups) == _IPV6_GROUPS


def is_port_name(text: str) -> bool:
    """PORT_NAME_PATTERN (fullmatch)."""
    return 1 <= len(text) <= _MAX_PORT_NAME and (text[0] in _ASCII_LETTERS or text[0] == "_") \
        and _only(text, _LABEL_CHARS)


def is_conda(text: str) -> bool:
    """CONDA_PATTERN (fullmatch): an environment's name, or an absolute path without spaces or shell characters."""
    if text.startswith("/"):
        return len(text) <= _MAX_CONDA_PATH and _only(text, _CONDA_PATH_CHARS)
    return 1 <= len(text) <= _MAX_CONDA_NAME and text[0] in _WORD_CHARS and _only(text, _CONDA_NAME_CHARS)


def is_refused_in_handshake(text: str) -> bool:
    """HANDSHAKE_REFUSED_PATTERN: whitespace (`\\s`: what str.isspace calls whitespace), `?` or `#`."""
    return "?" in text or "#" in text or any(char.isspace() for char in text)


def _only(text: str, allowed: frozenset[str]) -> bool:
    return all(char in allowed for char in text)


class Handshake(NamedTuple):
    """The HTTP health check: GET /path?parameters, 2xx means healthy."""

    path: str = ""
    parameters: Mapping[str, str] = MappingProxy({})
    #: The status-file field holding the port to check (e.g. `dashboard_port`); None: `port`.
    port_name: str | None = None

    @property
    def target(self) -> str:
        """The request target, encoded as urllib.parse's quote(path) and urlencode(parameters) would."""
        target = "/" + _percent_encoded(self.path.lstrip("/"), HANDSHAKE_PATH_SAFE)
        if self.parameters:
            target += "?" + "&".join(f"{_form_encoded(name)}={_form_encoded(value)}"
                                     for name, value in self.parameters.items())
        return target


def _percent_encoded(text: str, safe: str) -> str:
    """urllib.parse.quote(text, safe): urllib.parse (with ipaddress) costs the warm path a twentieth."""
    keep = URL_UNRESERVED | frozenset(safe.encode("ascii"))
    return "".join(chr(byte) if byte in keep else f"%{byte:02X}" for byte in text.encode("utf-8"))


def _form_encoded(value: object) -> str:
    """urllib.parse.quote_plus(str(value)), as urlencode writes each name and value."""
    return _percent_encoded(str(value), " ").replace(" ", "+")


class ParsedFile(NamedTuple):
    """A YAML config file's text and what it parsed to, and where the parse may be kept."""

    cache_file: str
    text: str
    data: Any
    config_dir: str  # the file's directory, a template name: a kept parse applies to this file alone


class LogOptions(NamedTuple):
    """The launcher's own logging, from the config's `log_level`, `log_file` and `debug_log_file`
    (command-line flags of the same names win); None where the config says nothing."""

    level: str | None = None
    file: str | None = None
    debug_file: str | None = None


class Scheduler(NamedTuple):
    """`scheduler:`: run the service as a batch job (see schedulers/); `options` are extra submit arguments."""

    type: str
    options: tuple[str, ...] = ()
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    renew_before: float | None = None  # seconds before the walltime ends that the tunnel's holder renews the job


class Config(NamedTuple):
    """A validated service configuration; `raw` is the whole mapping with defaults applied, less the
    launcher's own logging fields (`log`)."""

    workdir: str
    key_template: str
    command_template: str
    hostname: str | None
    ssh_hostname: str | None
    network_interface: str
    tunnel: bool
    handshake: Handshake | None
    conda: str | None
    file_parameters: Mapping[str, Any] | None
    meta: Mapping[str, Any] | None
    startup_timeout: float
    watchdog_interval: float
    raw: Mapping[str, Any]
    #: Seconds the connection broker outlives its last use (broker/); 0: no broker, one login per command.
    connection_persist: float = DEFAULT_CONNECTION_PERSIST
    log: LogOptions = LogOptions()
    #: Set by `load_config(cache=True)` when the file was parsed anew; `remember_parse` keeps it.
    parsed: ParsedFile | None = None
    scheduler: Scheduler | None = None
    #: Set by `load_config(cache=True)` from a kept parse: the key that text evaluated to when its run
    #: succeeded (the warm path then evaluates no template: the sandbox and `ast` are not even imported).
    known_key: str | None = None
    unread: tuple[str, ...] = ()  # the fields no template reads (each warned about)
    #: The ports the launch chooses for a stock server: `port` first, then each other `{NAME_port}` the
    #: command reads that the config does not set; empty for a service that writes its own status file.
    stock_ports: tuple[str, ...] = ()
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    #: A regular expression matched against the service's log while it starts: the service's URL.
    url_pattern: str | None = None
    #: The tunnel's local port, pinned (None: any free one).
    local_port: int | None = None
    #: Seconds a tunnel whose SSH link is lost tries to restore it (None: as long as the service may run).
    reconnect_timeout: float | None = None
    #: Shell lines run in order before the command, on the host (or node) the command runs on.
    setup: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        return self.hostname is not None

    @property
    def ssh_target(self) -> str:
        """What to connect to over SSH: `ssh_hostname`, else `hostname`."""
        if self.hostname is None:
            raise ConfigError("hostname: not set, so this service runs locally (no SSH target)")
        return self.ssh_hostname or self.hostname


class Configuration:
    """The original remote-http-launcher's configuration object, for code written against it.

    `Configuration.from_mapping(mapping)` and `Configuration.from_yaml(path)`
    validate exactly as `run()` does (raising `ConfigError`) and give the
    evaluated `key` and the parsed fields under the original's names.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.key = evaluate_key(config)

    @staticmethod
    def from_mapping(data: Mapping[str, Any]) -> Configuration:
        return Configuration(load_config(data))

    @staticmethod
    def from_yaml(path: str | os.PathLike[str]) -> Configuration:
        return Configuration(load_config(path))

    def __repr__(self) -> str:
        where = self.hostname or "localhost"
        return f"Configuration(key={self.key!r}, host={where!r}, tunnel={self.tunnel})"

    workdir = property(lambda self: self.config.workdir)
    hostname = property(lambda self: self.config.hostname)
    ssh_hostname = property(lambda self: self.config.ssh_hostname or self.config.hostname)
    command_template = property(lambda self: self.config.command_template)
    network_interface = property(lambda self: self.config.network_interface)
    handshake = property(lambda self: self.config.handshake)
    file_parameters = property(lambda self: self.config.file_parameters)
    tunnel = property(lambda self: self.config.tunnel)
    conda_env = property(lambda self: self.config.conda)
    meta = property(lambda self: self.config.meta)
    raw = property(lambda self: self.config.raw)

    @property
    def namespace(self) -> dict[str, Any]:
        """What the `command` template sees, as in the original (the evaluated `key` included)."""
        return template_namespace(self.config, key=self.key)


def evaluate_key(config: Config) -> str:
    """The state-file name; computed without touching any host, so the warm path stays local."""
    if config.known_key is not None:
        return config.known_key
    from .templates import render

    key = render(config.key_template, template_namespace(config), field="key", hints=KEY_HINTS)
    if not key or len(key) > MAX_KEY or key in (".", "..") or not set(key) <= KEY_CHARS:
        raise ConfigError(f"key: evaluated to {key[:80]!r}, which is not a plain file name "
                          f"(use letters, digits, '.', '_' and '-', at most {MAX_KEY} characters)")
    return key


def evaluate_command(config: Config, key: str, status_file: str, workdir: str | None = None,
                     ports: Mapping[str, str] | None = None) -> str:
    """The shell command line that starts the service (one line).

    `ports` gives each of a stock server's port fields (`config.stock_ports`) the placeholder the launch
    program replaces with the port it chooses on the service's host (scripts.port_placeholders); without
    `ports` (a dry run) each shows as `<port>`, `<dashboard_port>`...

    `workdir` is the working directory as an absolute path on the service's host (`~` expanded there):
    `{workdir}` and `config['workdir']` give it in the command, so that a quoted `'{workdir}'` (what a
    path with spaces needs) still names the directory. The key keeps `workdir` as written: keys must
    be the same wherever they are computed, and the original's.
    """
    if workdir is not None:
        config = config._replace(raw={**config.raw, "workdir": workdir})
    from .templates import render

    command = render(config.command_template,
                     template_namespace(config, key=key, status_file=status_file,
                                        **(ports or {name: f"<{name}>" for name in config.stock_ports})),
                     field="command", hints=COMMAND_HINTS)
    if not command.strip() or any(c in command for c in "\n\r\0"):
        raise ConfigError("command: must evaluate to one non-empty line")
    return command


def template_namespace(config: Config, **extra: str) -> dict[str, Any]:
    """Every identifier-named config field, `config` (the whole mapping), plus `extra`."""
    names = {name: value for name, value in config.raw.items() if name.isidentifier()}
    return {**names, "config": dict(config.raw), **extra}


def load_config(source: Mapping[str, Any] | str | os.PathLike[str], *, cache: bool = False,
                warn: Callable[[str], None] | None = None) -> Config:
    """Accept a mapping, or the path of a YAML file, and validate it. Its warnings (a field nothing reads)
    go to `warn`, by default `warnings.warn` (a UserWarning each).

    With `cache` (the `up` path, which scripts call again and again), the
    parse of a YAML file kept by `remember_parse` is reused while the file's
    text stays the same: importing and running the YAML parser costs ~10 ms,
    a sixth of the warm path.
    """
    if isinstance(source, Mapping):
        return parse_config(source, warn=warn)
    path = os.fspath(source)
    config_dir = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    text = read_text(path)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config: {str(path)!r} is {len(text) // 1024} KiB; a config is at most "
                          f"{MAX_CONFIG_BYTES // 1024} KiB (put large data in a file the service reads)")
    cache_file = _parse_cache_file(path) if cache else None
    cached = statefiles.decode(statefiles.read_sealed(cache_file, "parse cache")) if cache_file else None
    if cached is not None and cached.get("text") == text and cached.get("config_dir") == config_dir \
            and "data" in cached and isinstance(cached.get("key"), str) and isinstance(cached.get("unread"), list) \
            and isinstance(cached.get("stock_ports"), list):
        unread = tuple(str(name) for name in cached["unread"])
        stock_ports = tuple(str(name) for name in cached["stock_ports"])
        return parse_config(cached["data"], config_dir, unread, stock_ports, warn=warn)._replace(
            known_key=cached["key"])
    data = parse_yaml(text, path)
    config = parse_config(data, config_dir=config_dir, warn=warn)
    return config._replace(parsed=ParsedFile(cache_file, text, data, config_dir)) if cache_file else config


def remember_parse(config: Config) -> None:
    """Keep a config file's parse for the next `load_config(cache=True)`: called once a run with it
    succeeded, so a bad config or a failed run leaves nothing behind. Only a parse that JSON holds
    exactly (no dates, non-string keys or NaN) is kept; a failed write only costs speed."""
    if config.parsed is None:
        return
    try:
        encoded = statefiles.encode({"text": config.parsed.text, "data": config.parsed.data,
                                     "config_dir": config.parsed.config_dir, "key": evaluate_key(config),
                                     "unread": list(config.unread), "stock_ports": list(config.stock_ports)})
        if jsontext.loads(encoded)["data"] == config.parsed.data:
            statefiles.write_sealed(config.parsed.cache_file, encoded)
    except (TypeError, ValueError, OSError):
        pass


def _parse_cache_file(path: str) -> str:
    """`<state dir>/cache/config-<digest of the absolute path>.json`; the text inside tells whether it applies,
    its seal (statefiles.read_sealed) that we wrote it."""
    name = os.path.abspath(os.path.expanduser(path))
    digest = statefiles.name_digest(name.encode(errors="replace"), CACHE_NAME_DIGITS)
    return os.path.join(statefiles.base_dir(), "cache", f"config-{digest}.json")


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config: file {path!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path!r}: {_one_line(exc)}") from None


def parse_yaml(text: str, name: str = "<config>") -> Any:
    """Parse YAML safely; duplicate keys are an error (PyYAML would keep the last one silently).
    Plain configs are read without importing PyYAML (plainyaml), the rest by PyYAML."""
    from . import plainyaml

    plain = plainyaml.load(text)
    if plain is not None:
        return plain
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context:  # e.g. "while scanning a quoted scalar (line 1), found unexpected end of stream"
            if context_mark is not None and mark is not None and context_mark.line != mark.line:
                problem = f"{context} (line {context_mark.line + 1}), {problem}"
            else:
                problem = f"{context}, {problem}"
        lines = text.splitlines()
        if mark and mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t" \
                and "tab" not in problem:
            problem += " (a tab: indent YAML with spaces)"
        field = _top_level_field(lines, mark.line) if mark else None
        where += f" (field {field!r})" if field else ""
        if field and problem.startswith("mapping values are not allowed"):  # `command: serve --opt: x`
            problem += f"; a ': ' inside a value: quote the whole value, e.g. {field}: '...'"
        raise ConfigError(f"config: invalid YAML in {name!r}{where}: {_one_line(problem)}") from None


def _top_level_field(lines: list[str], line: int) -> str | None:
    """The name of the top-level field whose value spans `line` of a YAML text, when it is plain to see."""
    for text in reversed(lines[:line + 1]):
        if text[:1].isspace() or text.startswith(("#", "-")) or not text.strip():
            continue
        name, colon, _ = text.partition(":")
        return name.strip().strip("'\"")[:40] or None if colon else None
    return None


@cache
def _strict_loader() -> type:
    """PyYAML's safe loader (the C one when available), refusing duplicate keys in any mapping."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merged keys may be overridden; non-scalar keys are refused later anyway
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}; keep only one of them", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # Python's limit on int/str conversion
                raise yaml.constructor.ConstructorError(
                    None, None, f"a number with more than {MAX_INT_DIGITS} digits; quote it to make it a string",
                    node.start_mark) from None

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def parse_config(data: Any, config_dir: str | None = None, unread: tuple[str, ...] | None = None,
                 stock_ports: tuple[str, ...] | None = None, *, warn: Callable[[str], None] | None = None) -> Config:
    """Validate a mapping; `config_dir` (the YAML file's directory) becomes a template name. `unread` and
    `stock_ports`: the fields no template reads and the ports the launch chooses, as found for a kept parse
    of the same text (else they are found here, by parsing the templates). `warn`: as load_config's."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a mapping of fields (lines of 'name: value'), got {_describe(data)}")
    _field_names(data)
    _check_sizes(data)
    log = _log_options(data)
    data = {name: value for name, value in data.items() if name not in LOG_FIELDS}
    for name in REQUIRED_FIELDS:
        if data.get(name) is None:
            misspelt = next((given for given in data if isinstance(given, str) and given not in FIELDS
                             and near_miss(given.lower(), [name])), None)
            if misspelt is not None:  # `comand:` is why `command` is missing: say that first
                raise ConfigError(f"{misspelt[:40]}: not a field of the launcher; did you mean {name!r}? "
                                  f"({name}: required field is missing)")
            raise ConfigError(f"{name}: required field is missing; {REQUIRED_HINTS[name]}")

    workdir = _workdir(data["workdir"])
    key_template = _template(data, "key", MAX_KEY_TEMPLATE)
    command_template = _template(data, "command", MAX_COMMAND_TEMPLATE)
    if unread is None:
        unread = _unread_fields(data, (key_template, command_template))
    _warn_unread(unread, warn)
    hostname = _host(data, "hostname", is_host, "a host name or IP address, e.g. server.example.com")
    ssh_hostname = _host(data, "ssh_hostname", is_ssh_host, "[user@]host, e.g. alice@server.example.com")
    if ssh_hostname is not None and hostname is None:
        raise ConfigError("ssh_hostname: set without hostname; add 'hostname' (the host the service answers on)")
    network_interface = _host(data, "network_interface", is_host,
                              "a host name or IP address to bind, e.g. localhost or 0.0.0.0")
    scheduler = _scheduler(data.get("scheduler"))
    if scheduler is not None and network_interface is not None and is_loopback(network_interface):
        raise ConfigError(f"network_interface: {network_interface} is not reachable from the login node, where a "
                          f"batch job's service is reached; use {SCHEDULER_NETWORK_INTERFACE} (the default with "
                          "'scheduler')")
    network_interface = network_interface or (SCHEDULER_NETWORK_INTERFACE if scheduler else DEFAULT_NETWORK_INTERFACE)
    tunnel = _bool(data, "tunnel")
    if tunnel and hostname is None:
        raise ConfigError("tunnel: needs 'hostname' (tunnels reach services on remote hosts); add it or drop 'tunnel'")
    handshake = _handshake(data.get("handshake"))
    conda = _conda(data.get("conda"))
    setup = _setup(data.get("setup"))
    file_parameters = _json_mapping("file_parameters", data.get("file_parameters"))
    meta = _meta(data.get("meta"))
    _check_record_data(file_parameters, meta)
    startup_timeout = _seconds(data, "startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    watchdog_interval = _seconds(data, "watchdog_interval", DEFAULT_WATCHDOG_INTERVAL)
    connection_persist = _seconds(data, "connection_persist", DEFAULT_CONNECTION_PERSIST, zero_ok=True)
    reconnect_timeout = _seconds(data, "reconnect_timeout", 0.0) or None
    if stock_ports is None:
        stock_ports = _stock_ports(data, command_template)
    port_range = _port_range(data)
    url_pattern = _url_pattern(data.get("url_pattern"))
    local_port = _port(data, "local_port")
    if local_port is not None and not tunnel:
        raise ConfigError("local_port: pins the tunnel's local port, so it needs 'tunnel: true' (and hostname); "
                          "add them or drop local_port")

    # Templates see every field, the optional ones with their defaults (null means "use the default").
    raw = dict(data)
    raw["network_interface"] = network_interface
    raw["tunnel"] = tunnel
    for name in ("hostname", "ssh_hostname", "handshake", "conda", "setup", "file_parameters", "meta", "scheduler",
                 "reconnect_timeout"):
        raw.setdefault(name, None)
    for name, default in (("startup_timeout", startup_timeout), ("watchdog_interval", watchdog_interval),
                          ("connection_persist", connection_persist)):
        if raw.get(name) is None:
            raw[name] = default
    if config_dir is not None:
        raw.setdefault("config_dir", config_dir)
    return Config(
        workdir=workdir,
        key_template=key_template,
        command_template=command_template,
        hostname=hostname,
        ssh_hostname=ssh_hostname,
        network_interface=network_interface,
        tunnel=tunnel,
        handshake=handshake,
        conda=conda,
        file_parameters=file_parameters,
        meta=meta,
        startup_timeout=startup_timeout,
        watchdog_interval=watchdog_interval,
        raw=raw,
        connection_persist=connection_persist,
        log=log,
        scheduler=scheduler,
        unread=unread,
        stock_ports=stock_ports,
        port_range=port_range,
        url_pattern=url_pattern,
        local_port=local_port,
        reconnect_timeout=reconnect_timeout,
        setup=setup,
    )


def _stock_ports(data: Mapping[str, Any], command_template: str) -> tuple[str, ...]:
    """The port fields the launch chooses: `port` when the command reads it and the config does not set it,
    then each other `{NAME_port}` it reads that the config does not set. A stock server writes no status
    file, so one that also reads `{status_file}` is refused: the launcher could not tell which one reports."""
    from .templates import names_used

    used = names_used(command_template)
    if used is None or STOCK_PORT not in used or data.get(STOCK_PORT) is not None:
        return ()
    if "status_file" in used:
        raise ConfigError("command: reads both {port} and {status_file}; with {port} the launcher chooses the port "
                          "and writes the status record itself, so drop {status_file} (or drop {port} and let "
                          "the service report its own port)")
    extra = sorted(name for name in used if name.endswith(STOCK_PORT_SUFFIX) and name.isidentifier()
                   and data.get(name) is None and name not in FIELDS)
    return (STOCK_PORT, *extra)


def _port(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PORT:
        raise ConfigError(f"{name}: must be a TCP port number from 1 to {MAX_PORT}, got {_describe(value)}")
    return value


def _port_range(data: Mapping[str, Any]) -> tuple[int, int]:
    """port_start-port_end; one of them alone keeps the default range's width from it."""
    start, end = _port(data, "port_start"), _port(data, "port_end")
    span = DEFAULT_PORT_RANGE[1] - DEFAULT_PORT_RANGE[0]
    if start is None:
        start = DEFAULT_PORT_RANGE[0] if end is None or end >= DEFAULT_PORT_RANGE[0] else max(1, end - span)
    if end is None:
        end = max(DEFAULT_PORT_RANGE[1], min(MAX_PORT, start + span))
    if start > end:
        raise ConfigError(f"port_end: {end} is below port_start ({start}); the launch chooses ports from "
                          "port_start to port_end")
    return start, end


def _url_pattern(value: Any) -> str | None:
    """A regular expression (Python's `re`) for the service's URL in its log; compiled here so that a bad
    one is a config error, not a failed start."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_URL_PATTERN:
        raise ConfigError(f"url_pattern: must be a regular expression of 1 to {MAX_URL_PATTERN} characters, e.g. "
                          f"'http://[^ ]*[?]token=[0-9a-f]+', got {_describe(value)}")
    import re  # only for a config with a url_pattern

    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"url_pattern: not a valid regular expression ({_one_line(exc)}); fix or quote it "
                          "(in YAML single quotes, a backslash stays a backslash)") from None
    return value


def _unread_fields(data: Mapping[str, Any], templates: tuple[str, ...]) -> tuple[str, ...]:
    """The fields that are neither the launcher's nor read by a template. One close to a field of the
    launcher is refused ("did you mean 'tunnel'?"). A template reading `config` by a computed key may read
    anything, so then none is."""
    unknown = [name for name, value in data.items() if name not in FIELDS and name != "config_dir"
               and not _merged(value, data)]
    if not unknown:
        return ()
    from .templates import names_used

    used: set[str] = set()
    for template in templates:
        names = names_used(template)
        if names is None:
            return ()
        used |= names
    unread = tuple(name for name in unknown if name not in used)
    for name in unread:
        close = near_miss(name.lower(), FIELDS)
        if close:
            raise ConfigError(f"{name[:40]}: not a field of the launcher, and no template uses it; did you "
                              f"mean {close!r}?")
    return unread


def _warn_unread(unread: tuple[str, ...], warn: Callable[[str], None] | None) -> None:
    for name in unread:
        message = (f"config: field {name[:40]!r} is not a field of the launcher and no template (key, command) "
                   "uses it; it is ignored")
        if warn is not None:
            warn(message)
        else:
            import warnings

            warnings.warn(message, stacklevel=2)


def _merged(value: Any, data: Mapping[str, Any]) -> bool:
    """A mapping whose every field is also a top-level field: the anchor of a YAML merge (`<<: *defaults`)."""
    return isinstance(value, Mapping) and bool(value) and all(name in data for name in value)


def _field_names(data: Mapping[Any, Any]) -> None:
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"config: field names must be strings, got {_describe(name)}; quote the name")
        if not name or len(name) > MAX_FIELD_NAME or has_control(name):
            raise ConfigError(f"config: invalid field name {name[:40]!r} (1 to {MAX_FIELD_NAME} characters, "
                              "on one line)")


def _check_sizes(data: Mapping[str, Any]) -> None:
    """Refuse what would break later steps, before anything runs: numbers beyond Python's int/str
    limit, values nested absurdly deep, and fields whose strings add up to more than MAX_FIELD_CHARS."""
    for name, value in data.items():
        stack: list[tuple[Any, int]] = [(value, 0)]
        chars = count = 0
        while stack:
            item, depth = stack.pop()
            count += 1
            if depth > MAX_NESTING:
                raise ConfigError(f"{name}: nested more than {MAX_NESTING} levels deep; flatten it")
            if count > MAX_FILE_PARAMETERS_VALUES:
                raise ConfigError(f"{name}: more than {MAX_FILE_PARAMETERS_VALUES} values (or it contains itself "
                                  "through a YAML alias); keep it small")
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > MAX_INT_DIGITS * 3:
                raise ConfigError(f"{name}: a number with more than {MAX_INT_DIGITS} digits; quote it to make it "
                                  "a string")
            elif isinstance(item, Mapping):
                stack.extend((child, depth + 1) for pair in item.items() for child in pair)
            elif isinstance(item, (list, tuple, set, frozenset)):
                stack.extend((child, depth + 1) for child in item)
            if chars > MAX_FIELD_CHARS:
                raise ConfigError(f"{name}: too large (more than {MAX_FIELD_CHARS} characters); put large data "
                                  "in a file the service reads")


def _log_options(data: Mapping[str, Any]) -> LogOptions:
    level, file, debug_file = (data.get(name) for name in LOG_FIELDS)
    if level is not None and level not in LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LEVELS)}, got {_describe(level)}")
    for name, value in (("log_file", file), ("debug_log_file", debug_file)):
        if value is not None and (not isinstance(value, str) or not value or has_control(value)):
            raise ConfigError(f"{name}: must be the path of a file to write, got {_describe(value)}")
    return LogOptions(level, file, debug_file)


def _workdir(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"workdir: must be a path, got {_describe(value)}; {REQUIRED_HINTS['workdir']}")
    if not value:
        raise ConfigError(f"workdir: is empty; {REQUIRED_HINTS['workdir']}")
    if len(value) > MAX_PATH:
        raise ConfigError(f"workdir: too long ({len(value)} characters, at most {MAX_PATH})")
    if has_control(value):
        raise ConfigError("workdir: must not contain NUL characters or line breaks")
    if not is_absolute_workdir(value):
        raise ConfigError(f"workdir: {value[:80]!r} is relative; use an absolute path (/...) "
                          "or one under the home directory (~/...)")
    return value


def _template(data: Mapping[str, Any], name: str, limit: int) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string template, got {_describe(value)}; {REQUIRED_HINTS[name]}")
    if not value.strip():
        raise ConfigError(f"{name}: is empty; {REQUIRED_HINTS[name]}")
    if len(value) > limit:
        raise ConfigError(f"{name}: too long ({len(value)} characters, at most {limit})")
    if "\0" in value:
        raise ConfigError(f"{name}: must not contain NUL characters")
    if "\n" in value or "\r" in value:
        raise ConfigError(f"{name}: must be one line; for a long value use a folded YAML block ('>-') "
                          "with every line indented alike")
    return value


def _host(data: Mapping[str, Any], name: str, valid: Callable[[str], bool], what: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be {what}; got {_describe(value)}")
    if not valid(value):
        raise ConfigError(f"{name}: {value[:80]!r} is not valid; use {what}")
    return value


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false (unquoted), got {_describe(value)}")
    return value


def _seconds(data: Mapping[str, Any], name: str, default: float, label: str | None = None, *,
             zero_ok: bool = False) -> float:
    value = data.get(name)
    name = label or name
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: must be a number of seconds, got {_describe(value)}")
    low_ok = value >= 0 if zero_ok else value > 0  # false for NaN, as `value <= MAX_TIMEOUT` is for infinity
    if not (low_ok and value <= MAX_TIMEOUT):
        least = "0 or more" if zero_ok else "more than 0"
        raise ConfigError(f"{name}: must be {least} and at most {MAX_TIMEOUT:.0f} seconds (7 days), got {value}")
    return float(value)


def _handshake(value: Any) -> Handshake | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Handshake(path=_handshake_path("handshake", value))
    if not isinstance(value, Mapping):
        raise ConfigError(f"handshake: must be a URL path or a mapping with 'path' and 'parameters', "
                          f"got {_describe(value)}")
    unknown = sorted(str(name) for name in value if name not in ("path", "parameters", "port_name"))
    if unknown:
        raise ConfigError(f"handshake: unknown field {unknown[0][:40]!r}; only 'path', 'parameters' and "
                          "'port_name' are allowed")
    port_name = value.get("port_name")
    if port_name is not None and (not isinstance(port_name, str) or not is_port_name(port_name)):
        raise ConfigError(f"handshake.port_name: must name a port field of the status file, e.g. 'dashboard_port', "
                          f"got {_describe(port_name)}")
    path = value.get("path", "")
    if not isinstance(path, str):
        raise ConfigError(f"handshake.path: must be a URL path, got {_describe(path)}")
    parameters = value.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"handshake.parameters: must be a mapping of query parameters (name: value), "
                          f"got {_describe(parameters)}")
    params: dict[str, str] = {}
    for pname, pvalue in parameters.items():
        if not isinstance(pname, str):
            raise ConfigError(f"handshake.parameters: names must be strings, got {_describe(pname)}; quote the name")
        if not isinstance(pvalue, (str, int, float)):
            raise ConfigError(f"handshake.parameters.{pname[:40]}: must be a string, number or boolean, "
                              f"got {_describe(pvalue)}")
        params[pname] = str(pvalue).lower() if isinstance(pvalue, bool) else str(pvalue)
    return Handshake(path=_handshake_path("handshake.path", path), parameters=params, port_name=port_name)


def _handshake_path(name: str, path: str) -> str:
    if len(path) > MAX_HANDSHAKE_PATH:
        raise ConfigError(f"{name}: too long ({len(path)} characters, at most {MAX_HANDSHAKE_PATH})")
    if is_refused_in_handshake(path):
        raise ConfigError(f"{name}: {path[:80]!r} must be a URL path without spaces, '?' or '#'; "
                          "put query parameters under handshake.parameters")
    return path


def is_loopback(host: str) -> bool:
    """A name or address that only its own host reaches."""
    return host in LOOPBACK_INTERFACES or host.startswith(LOOPBACK_PREFIX)


def _scheduler(value: Any) -> Scheduler | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"scheduler: must be a mapping with 'type' (e.g. {{type: slurm}}), got {_describe(value)}")
    unknown = sorted(str(name) for name in value if name not in SCHEDULER_FIELDS)
    if unknown:
        allowed = ", ".join(map(repr, SCHEDULER_FIELDS))
        raise ConfigError(f"scheduler: unknown field {unknown[0][:40]!r}; only {allowed} are allowed")
    kind = value.get("type")
    if kind not in SCHEDULER_TYPES:
        raise ConfigError(f"scheduler.type: must be one of {', '.join(SCHEDULER_TYPES)}, got {_describe(kind)}")
    options = value.get("options")
    if options is None:
        options = []
    if not isinstance(options, list) or len(options) > MAX_SCHEDULER_OPTIONS:
        raise ConfigError(f"scheduler.options: must be a list of at most {MAX_SCHEDULER_OPTIONS} submit "
                          f"arguments, e.g. ['--time=08:00:00', '--partition=short'], got {_describe(options)}")
    _scheduler_options(SCHEDULER_OPTIONS[kind], options)
    queue_timeout = _seconds(value, "queue_timeout", DEFAULT_QUEUE_TIMEOUT, "scheduler.queue_timeout")
    renew_before = _seconds(value, "renew_before", 0.0, "scheduler.renew_before") \
        if value.get("renew_before") is not None else None
    return Scheduler(kind, tuple(options), queue_timeout, renew_before)


def _scheduler_options(rules: SchedulerOptions, options: list[Any]) -> None:
    """Each option one word of the type's shape, and none of the flags the launcher's submission sets."""
    import re  # only for a scheduler's config

    for option in options:
        if not isinstance(option, str) or not re.fullmatch(rules.word, option) or has_control(option):
            raise ConfigError(f"scheduler.options: {_describe(option)} is not {rules.advice}")
        flag = _reserved_flag(rules, option)
        if flag is not None:
            raise ConfigError(f"scheduler.options: {option[:60]!r} would take over {flag}, which the launcher "
                              "sets itself (its log, job name and working directory are what it watches); drop it")


def _reserved_flag(rules: SchedulerOptions, word: str) -> str | None:
    """The launcher's own flag that an option word sets (a long flag's abbreviation too), or None."""
    if not rules.attached:
        return word if word in rules.reserved else None
    if word.startswith("--"):
        name = word.partition("=")[0]
        return next((flag for flag in rules.reserved if flag.startswith("--") and flag.startswith(name)
                     and len(name) > len("--")), None)
    if word.startswith("-") and len(word) >= len("-x"):  # `-o`, or `-ofile` with its value attached
        return next((flag for flag in rules.reserved if flag == word[:2]), None)
    return None


def _conda(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"conda: must be an environment name or absolute path, got {_describe(value)}")
    if not is_conda(value):
        raise ConfigError(f"conda: {value[:80]!r} is neither an environment name (letters, digits, '_', '.', '+', "
                          "'-') nor an absolute path without spaces or shell characters")
    return value


def _setup(value: Any) -> tuple[str, ...]:
    """Shell lines, each run as written; one line each, so that a failure names exactly the line that failed
    (a step of several lines joins them with `;` or `&&`)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SETUP_LINES:
        raise ConfigError(f"setup: must be a list of at most {MAX_SETUP_LINES} shell lines, e.g. "
                          f"['module load python/3.11'], got {_describe(value)}")
    for number, line in enumerate(value, 1):
        if not isinstance(line, str):
            raise ConfigError(f"setup: line {number} must be a string (a shell line), got {_describe(line)}")
        if len(line) > MAX_SETUP_LINE:
            raise ConfigError(f"setup: line {number} is too long ({len(line)} characters, at most {MAX_SETUP_LINE})")
        if "\0" in line:
            raise ConfigError(f"setup: line {number} must not contain NUL characters")
        if "\n" in line or "\r" in line:
            raise ConfigError(f"setup: line {number} must be one line; split it into several lines of the list, "
                              "or join its commands with ';' or '&&'")
    return tuple(value)


def _check_record_data(file_parameters: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> None:
    """The status and client files keep both, and a state file over statefiles.MAX_STATE_BYTES is corrupt."""
    given = [value for value in (file_parameters, meta) if value is not None]
    if not given:
        return
    import json

    size = sum(len(json.dumps(value, allow_nan=False)) for value in given)
    if size > MAX_RECORD_DATA_JSON:
        raise ConfigError(f"file_parameters, meta: too large ({size} bytes as JSON, at most {MAX_RECORD_DATA_JSON} "
                          "together); put large data in a file the service reads")


def _meta(value: Any) -> Mapping[str, Any] | None:
    """Free-form JSON data about the service, kept unchanged in the status and client files."""
    return _json_mapping("meta", value)


def _json_mapping(name: str, value: Any) -> Mapping[str, Any] | None:
    """A mapping that JSON holds unchanged, or None (absent)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be a mapping (name: value), got {_describe(value)}")
    _check_json(name, value)
    return value


def _check_json(name: str, value: Any) -> None:
    """Refuse what JSON cannot hold unchanged (dates, binary, NaN, non-string keys). How much there is was
    measured before (`_check_sizes`), so this walk is bounded."""
    stack: list[tuple[str, Any]] = [(name, value)]
    while stack:
        where, item = stack.pop()
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not jsontext.is_finite(item):
                raise ConfigError(f"{where}: {item} is not a JSON number; use a finite number, or quote it")
        elif isinstance(item, Mapping):
            for child_name, child in item.items():
                if not isinstance(child_name, str):
                    raise ConfigError(f"{where}: names must be strings, got {_describe(child_name)}; quote the name")
                stack.append((f"{where}.{child_name[:40]}", child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child) for index, child in enumerate(item))
        else:
            raise ConfigError(f"{where}: {_describe(item)} is not JSON; quote it to make it a string "
                              "(JSON holds strings, numbers, booleans, null, lists and mappings)")


def _describe(value: Any) -> str:
    """A short, one-line description of a YAML value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if hasattr(value, "isoformat"):  # a YAML date or timestamp (`datetime` is not imported on the warm path)
        return f"a date ({value.isoformat()})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (set, frozenset)):
        return "a set"
    return f"a {type(value).__name__}"


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
