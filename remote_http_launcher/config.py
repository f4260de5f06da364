"""Load and validate a service configuration.

Validation happens before anything is touched: every problem is reported as a
one-line `ConfigError` naming the field, so a bad config never starts a process
or writes a file. `config.schema.yaml` mirrors these rules.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_NETWORK_INTERFACE = "localhost"
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_WATCHDOG_INTERVAL = 5.0
MAX_STRING = 4096
MAX_TEMPLATE = 10_000
MAX_TIMEOUT = 7 * 24 * 3600.0

REQUIRED_FIELDS = ("workdir", "key", "command")
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
SSH_HOST_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?(?=.{1,253}$)[A-Za-z0-9_][A-Za-z0-9_.%-]*$")
CONDA_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")
HANDSHAKE_PATH_RE = re.compile(r"^[^\s?#]{0,2048}$")


@dataclass(frozen=True)
class Handshake:
    """The HTTP health check: GET /path?parameters, 2xx means healthy."""

    path: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        from urllib.parse import quote, urlencode

        target = "/" + quote(self.path.lstrip("/"), safe="/:@!$&'()*+,;=-._~%")
        if self.parameters:
            target += "?" + urlencode(self.parameters)
        return target


@dataclass(frozen=True)
class Config:
    """A validated service configuration; `raw` is the whole mapping with defaults applied."""

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
    startup_timeout: float
    watchdog_interval: float
    raw: Mapping[str, Any]

    @property
    def remote(self) -> bool:
        return self.hostname is not None

    @property
    def ssh_target(self) -> str:
        """What to connect to over SSH: `ssh_hostname`, else `hostname`."""
        if self.hostname is None:
            raise ConfigError("hostname: not set, so this service runs locally (no SSH target)")
        return self.ssh_hostname or self.hostname


def load_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> Config:
    """Accept a mapping, or the path of a YAML file, and validate it."""
    if isinstance(source, Mapping):
        return parse_config(source)
    path = Path(source)
    return parse_config(read_yaml(path), config_dir=str(path.expanduser().absolute().parent))


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config: file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: cannot read {str(path)!r}: {_one_line(exc)}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise ConfigError(f"config: YAML syntax error in {str(path)!r}{where}: {problem}") from None


def parse_config(data: Any, config_dir: str | None = None) -> Config:
    """Validate a mapping; `config_dir` (the YAML file's directory) becomes a template name."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a mapping of fields, got {_type_name(data)}")
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"config: field names must be strings, got {name!r}")
        if not name or len(name) > 256 or "\0" in name or "\n" in name:
            raise ConfigError(f"config: invalid field name {name[:40]!r}")
    for name in REQUIRED_FIELDS:
        if data.get(name) is None:
            raise ConfigError(f"{name}: required field is missing")

    workdir = _workdir(data["workdir"])
    key_template = _template(data, "key", MAX_TEMPLATE // 10)
    command_template = _template(data, "command", MAX_TEMPLATE)
    hostname = _optional_host(data, "hostname", HOST_RE)
    ssh_hostname = _optional_host(data, "ssh_hostname", SSH_HOST_RE)
    if ssh_hostname is not None and hostname is None:
        raise ConfigError("ssh_hostname: set without hostname; add 'hostname' (the HTTP host) too")
    network_interface = _optional_host(data, "network_interface", HOST_RE) or DEFAULT_NETWORK_INTERFACE
    tunnel = _bool(data, "tunnel")
    if tunnel and hostname is None:
        raise ConfigError("tunnel: needs 'hostname' (tunnels are for services on remote hosts)")
    startup_timeout = _seconds(data, "startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    watchdog_interval = _seconds(data, "watchdog_interval", DEFAULT_WATCHDOG_INTERVAL)

    raw = dict(data)
    raw.setdefault("network_interface", network_interface)
    raw.setdefault("tunnel", tunnel)
    for name in ("hostname", "ssh_hostname", "handshake", "conda", "file_parameters"):
        raw.setdefault(name, None)
    raw.setdefault("startup_timeout", startup_timeout)
    raw.setdefault("watchdog_interval", watchdog_interval)
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
        handshake=_handshake(data.get("handshake")),
        conda=_conda(data.get("conda")),
        file_parameters=_file_parameters(data.get("file_parameters")),
        startup_timeout=startup_timeout,
        watchdog_interval=watchdog_interval,
        raw=raw,
    )


def _workdir(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"workdir: must be a string path, got {_type_name(value)}")
    if not value.strip():
        raise ConfigError("workdir: must not be empty")
    if len(value) > MAX_STRING:
        raise ConfigError(f"workdir: too long ({len(value)} characters, at most {MAX_STRING})")
    if "\0" in value or "\n" in value or "\r" in value:
        raise ConfigError("workdir: must not contain NUL or line breaks")
    if not (value.startswith("/") or value == "~" or value.startswith("~/")):
        raise ConfigError(f"workdir: must be an absolute path or start with '~/', got {value!r}")
    return value


def _template(data: Mapping[str, Any], name: str, limit: int) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string template, got {_type_name(value)}")
    if not value.strip():
        raise ConfigError(f"{name}: must not be empty")
    if len(value) > limit:
        raise ConfigError(f"{name}: too long ({len(value)} characters, at most {limit})")
    if "\0" in value:
        raise ConfigError(f"{name}: must not contain NUL characters")
    return value


def _optional_host(data: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a host name or IP address, got {_type_name(value)}")
    if _is_ip(value) or pattern.match(value):
        return value
    raise ConfigError(f"{name}: {value[:80]!r} is not a valid host name or IP address")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false, got {_type_name(value)}")
    return value


def _seconds(data: Mapping[str, Any], name: str, default: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a number of seconds, got {_type_name(value)}")
    if not 0 < value <= MAX_TIMEOUT:
        raise ConfigError(f"{name}: must be between 0 and {MAX_TIMEOUT:.0f} seconds, got {value}")
    return float(value)


def _handshake(value: Any) -> Handshake | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Handshake(path=_handshake_path(value))
    if not isinstance(value, Mapping):
        raise ConfigError(f"handshake: must be a path or a mapping {{path, parameters}}, got {_type_name(value)}")
    unknown = set(value) - {"path", "parameters"}
    if unknown:
        raise ConfigError(f"handshake: unknown field {sorted(map(str, unknown))[0]!r} (allowed: path, parameters)")
    path = value.get("path", "")
    if not isinstance(path, str):
        raise ConfigError(f"handshake.path: must be a string, got {_type_name(path)}")
    parameters = value.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"handshake.parameters: must be a mapping, got {_type_name(parameters)}")
    params: dict[str, str] = {}
    for pname, pvalue in parameters.items():
        if not isinstance(pname, str) or isinstance(pvalue, (Mapping, list)) or pvalue is None:
            raise ConfigError(f"handshake.parameters: {pname!r} must map a name to a string or number")
        params[pname] = str(pvalue).lower() if isinstance(pvalue, bool) else str(pvalue)
    return Handshake(path=_handshake_path(path), parameters=params)


def _handshake_path(path: str) -> str:
    if not HANDSHAKE_PATH_RE.match(path):
        raise ConfigError(f"handshake: path {path[:80]!r} must be a URL path without spaces, '?' or '#'")
    return path


def _conda(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"conda: must be an environment name or path, got {_type_name(value)}")
    if CONDA_NAME_RE.match(value):
        return value
    if value.startswith(("/", "~/")) and len(value) <= MAX_STRING and not re.search(r"[\0\n\r]", value):
        return value
    raise ConfigError(f"conda: {value[:80]!r} is not an environment name or absolute path")


def _file_parameters(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"file_parameters: must be a mapping, got {_type_name(value)}")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"file_parameters: not JSON-serialisable ({_one_line(exc)})") from None
    if len(text) > 1_000_000:
        raise ConfigError("file_parameters: too large (more than 1 MB as JSON)")
    return value


def _type_name(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
