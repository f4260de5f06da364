"""Config validation: every broken config of the corpus through the real CLI, and the defaults.

Each corpus entry runs `python -m remote_http_launcher CONFIG` in its own
directory, with HOME and REMOTE_HTTP_LAUNCHER_DIR inside it: it must exit 2
with one `error: ...` line naming the field, and leave nothing behind (no state
file, no workdir, no marker file from the command). The subprocesses run in
parallel, once per module, so the whole corpus takes a few seconds.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_http_launcher import config as config_module
from remote_http_launcher.config import (
    IPV6_PATTERN,
    Config,
    Handshake,
    Scheduler,
    evaluate_command,
    evaluate_key,
    load_config,
    parse_config,
    parse_yaml,
)
from remote_http_launcher.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
HUGE = "a" * 102_400
CONFIG_NAME = "service.yaml"  # not "config.yaml": the error line must name the field, not the file


def load_corpus(name: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))["configs"]
    return entries


BAD = load_corpus("bad_configs.yaml")
GOOD = load_corpus("good_configs.yaml")


def substitute(value: Any, marker: str = "MARKER") -> Any:
    """Replace the corpus placeholders (MARKER, @100KB@) in every string, keys included."""
    if isinstance(value, str):
        return value.replace("MARKER", marker).replace("@100KB@", HUGE)
    if isinstance(value, dict):
        return {substitute(k, marker): substitute(v, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(item, marker) for item in value]
    return value


def config_text(entry: dict[str, Any], marker: str = "MARKER") -> str:
    """The YAML file an entry stands for."""
    if "yaml" in entry:
        return str(substitute(entry["yaml"], marker))
    return yaml.safe_dump(substitute(entry["config"], marker), sort_keys=False, allow_unicode=True)


def parsed(entry: dict[str, Any]) -> Any:
    """The entry's document as the launcher reads it (raises ConfigError when it is not valid YAML)."""
    return parse_yaml(config_text(entry), CONFIG_NAME)


def check_runtime(data: Any) -> str:
    """Everything the launcher checks before touching anything; returns the evaluated command."""
    config = parse_config(data)
    key = evaluate_key(config)
    return evaluate_command(config, key, f"/state/{key}.json")


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    marker_exists: bool
    left_behind: list[str]


def run_cli(entry: dict[str, Any], base: Path, *args: str) -> CliRun:
    home = base / "home"
    home.mkdir(parents=True)
    marker = base / "marker"
    config = base / CONFIG_NAME
    config.write_text(config_text(entry, str(marker)), encoding="utf-8")
    env = {**os.environ, "HOME": str(home), "REMOTE_HTTP_LAUNCHER_DIR": str(base / "state"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(config), *args], cwd=base, env=env,
                          capture_output=True, text=True, timeout=60)
    left = sorted(str(path.relative_to(base)) for path in base.rglob("*") if path not in (config, home))
    return CliRun(proc.returncode, proc.stdout, proc.stderr, marker.exists(), left)


def run_all(entries: list[dict[str, Any]], base: Path, *args: str) -> dict[str, CliRun]:
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        futures = {entry["id"]: pool.submit(run_cli, entry, base / entry["id"], *args) for entry in entries}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CliRun]]:
    yield run_all(BAD, tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CliRun]]:
    yield run_all(GOOD, tmp_path_factory.mktemp("good"), "--dry-run")


def test_corpus_shape() -> None:
    assert len(BAD) >= 45 and len(GOOD) >= 10
    for entry in BAD + GOOD:
        assert ("config" in entry) != ("yaml" in entry), entry["id"]
    assert len({entry["id"] for entry in BAD + GOOD}) == len(BAD) + len(GOOD)
    accepted = [entry["id"] for entry in BAD if entry.get("schema") == "accepts"]
    assert len(accepted) <= 12, accepted  # few, and only template-evaluation cases
    assert all(entry["field"] in ("key", "command") for entry in BAD if entry.get("schema") == "accepts")


@pytest.mark.parametrize("entry", BAD, ids=[entry["id"] for entry in BAD])
def test_bad_config_is_refused_before_anything_happens(entry: dict[str, Any], bad_runs: dict[str, CliRun]) -> None:
    run = bad_runs[entry["id"]]
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert run.stderr.endswith("\n") and len(run.stderr.splitlines()) == 1, run.stderr
    line = run.stderr.rstrip("\n")
    assert line.startswith("error: "), line
    assert entry["field"] in line, line
    assert len(line) < 1000, line
    assert not run.marker_exists
    assert run.left_behind == []


@pytest.mark.parametrize("entry", GOOD, ids=[entry["id"] for entry in GOOD])
def test_good_config_dry_run_prints_the_command(entry: dict[str, Any], good_runs: dict[str, CliRun]) -> None:
    run = good_runs[entry["id"]]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert len(run.stdout.splitlines()) == 1 and run.stdout.strip(), run.stdout
    assert run.left_behind == []


# --- fields nothing reads ---------------------------------------------------------------------------------------

MISSPELT = {"workdir": "~/service", "key": "svc", "command": "touch MARKER --port {port_start}", "port_start": 8000}


@pytest.mark.parametrize(("field", "value", "meant"), [
    ("tunel", True, "tunnel"), ("handshke", "healthcheck", "handshake"), ("startup_timeot", 5, "startup_timeout"),
    ("Tunnel", True, "tunnel"), ("ssh_host", "login", "ssh_hostname"),
])
def test_a_misspelt_field_is_refused_with_the_field_meant(field: str, value: Any, meant: str,
                                                           tmp_path: Path) -> None:
    """Otherwise `tunel: true` runs without a tunnel and fails later with an unrelated message."""
    run = run_cli({"config": {**MISSPELT, field: value}}, tmp_path)
    assert (run.returncode, run.stdout, run.marker_exists, run.left_behind) == (2, "", False, [])
    assert run.stderr == (f"error: {field}: not a field of the launcher, and no template uses it; "
                          f"did you mean '{meant}'?\n")


def test_a_field_a_template_reads_is_a_template_variable_however_it_is_spelt(tmp_path: Path) -> None:
    for reads in ("{tunel}", "{config['tunel']}", "{config.get('tunel', 0)}", "{'{tunel}'.format_map(config)}",
                  "{config[workdir and 'tunel']}"):  # a computed key may read any field: nothing is said
        config = minimal(tunel=1, command=f"demo {reads}")
        assert evaluate_command(config, "demo", "/s").startswith("demo ")
    with pytest.raises(ConfigError, match="did you mean 'tunnel'"):
        minimal(tunel=1, command="demo --tunel {status_file}")  # the command's own text reads no field


def test_an_unread_field_far_from_any_launcher_field_is_a_warning(tmp_path: Path) -> None:
    run = run_cli({"config": {**MISSPELT, "colour": "blue"}}, tmp_path, "--dry-run")
    assert run.returncode == 0 and run.stdout.startswith("touch "), run.stderr
    assert run.stderr == ("warning: config: field 'colour' is not a field of the launcher and no template "
                          "(key, command) uses it; it is ignored\n")
    with pytest.warns(UserWarning, match="'colour'"):
        minimal(colour="blue")


# --- defaults and what templates see -------------------------------------------------------------------------


def minimal(**fields: Any) -> Config:
    return load_config({"workdir": "/srv/demo", "key": "demo", "command": "demo {status_file}", **fields})


def test_defaults() -> None:
    config = minimal()
    assert config.network_interface == "localhost"
    assert config.tunnel is False
    assert config.startup_timeout == 60.0
    assert config.watchdog_interval == 5.0
    assert (config.hostname, config.ssh_hostname, config.handshake, config.conda, config.file_parameters) == (
        None, None, None, None, None)
    assert not config.remote
    assert config.raw["network_interface"] == "localhost"
    assert config.raw["tunnel"] is False
    assert config.raw["startup_timeout"] == 60


def test_scheduler_fields_and_defaults() -> None:
    assert minimal().scheduler is None
    config = minimal(scheduler={"type": "slurm"})
    assert config.scheduler == Scheduler("slurm", (), 600.0)
    assert config.network_interface == "0.0.0.0"  # reachable from the login node
    given = minimal(scheduler={"type": "slurm", "options": ["--time=1:00:00", "--comment=two words"],
                               "queue_timeout": 30}, network_interface="::")
    assert given.scheduler == Scheduler("slurm", ("--time=1:00:00", "--comment=two words"), 30.0)
    assert given.network_interface == "::"
    assert minimal(scheduler={"type": "slurm", "renew_before": 70}).scheduler == Scheduler("slurm", (), 600.0, 70.0)


def test_reconnect_timeout_has_no_limit_by_default() -> None:
    assert minimal().reconnect_timeout is None and minimal(reconnect_timeout=None).reconnect_timeout is None
    assert minimal(reconnect_timeout=90).reconnect_timeout == 90.0
    with pytest.raises(ConfigError, match=r"^reconnect_timeout: must be more than 0"):
        minimal(reconnect_timeout=0)


def test_slurm_options_near_the_launchers_own_flags_are_kept() -> None:
    options = ("--export=ALL", "--partition=short", "--exclusive", "--error-is-not-a-prefix=1", "--comment=-o x")
    config = minimal(scheduler={"type": "slurm", "options": list(options)})
    assert config.scheduler is not None and config.scheduler.options == options
    with pytest.raises(ConfigError, match="'--open=1' would take over --open-mode"):  # an abbreviation
        minimal(scheduler={"type": "slurm", "options": [*options, "--open=1"]})


def test_sge_flags_are_whole_words_oar_flags_are_getopts() -> None:
    """Grid Engine's flags are words of their own (-js is not -j with a value); oarsub's take an attached value
    and an abbreviation (--dir is --directory)."""
    options = ("-js", "10", "-notify", "-now-not", "-Nx")
    config = minimal(scheduler={"type": "sge", "options": list(options)})
    assert config.scheduler is not None and config.scheduler.options == options
    with pytest.raises(ConfigError, match="'-now' would take over -now"):
        minimal(scheduler={"type": "sge", "options": ["-now", "y"]})
    with pytest.raises(ConfigError, match="'--dir=/tmp' would take over --directory"):
        minimal(scheduler={"type": "oar", "options": ["-l", "walltime=1:00:00", "--dir=/tmp"]})
    with pytest.raises(ConfigError, match=r"'-Ox\.log' would take over -O"):
        minimal(scheduler={"type": "oar", "options": ["-Ox.log"]})


def test_default_network_interface_is_visible_to_templates() -> None:
    config = minimal(key="svc-{network_interface}-{config['network_interface']}")
    assert evaluate_key(config) == "svc-localhost-localhost"


def test_null_optional_fields_take_their_defaults() -> None:
    config = minimal(key="svc-{network_interface}-{tunnel}-{startup_timeout:.0f}", network_interface=None,
                     tunnel=None, startup_timeout=None, hostname=None)
    assert (config.network_interface, config.tunnel, config.startup_timeout) == ("localhost", False, 60.0)
    assert evaluate_key(config) == "svc-localhost-False-60"


def test_given_values_are_kept_as_written() -> None:
    config = minimal(startup_timeout=30, watchdog_interval=0.5, network_interface="0.0.0.0")
    assert config.startup_timeout == 30.0 and isinstance(config.startup_timeout, float)
    assert config.raw["startup_timeout"] == 30 and isinstance(config.raw["startup_timeout"], int)
    assert config.watchdog_interval == 0.5
    assert config.network_interface == "0.0.0.0"


def test_extra_fields_and_the_config_mapping_are_visible_to_templates() -> None:
    config = minimal(key="svc-{port_start}",
                     command="run {port_start} {config['port_end']} {config['tunnel']} {timeout} "
                             "--status {status_file} --key {key} {config.get('hostname')}",
                     port_start=10, port_end=20, timeout=5)
    key = evaluate_key(config)
    assert key == "svc-10"
    assert evaluate_command(config, key, "/s/svc-10.json") == (
        "run 10 20 False 5 --status /s/svc-10.json --key svc-10 None")


def test_seed_readme_example_renders_exactly() -> None:
    entry = next(entry for entry in GOOD if entry["id"] == "seed_readme_example")
    config = parse_config(parsed(entry))
    key = evaluate_key(config)
    assert key == "myservice-home--user--my-service-data"
    assert evaluate_command(config, key, "/state/s.json") == (
        "myservice --port-range 10000 19999 --status-file /state/s.json --host 0.0.0.0 --timeout 600 "
        "/home/user/my-service-data")
    assert config.hostname == "my-server.example.com" and config.ssh_target == "my-server.example.com"
    assert config.conda == "myservice-env"
    assert config.handshake == Handshake(path="healthcheck")
    assert config.handshake.target == "/healthcheck"


@pytest.mark.parametrize("entry", [entry for entry in GOOD if "expect_key" in entry], ids=lambda entry: entry["id"])
def test_good_config_keys(entry: dict[str, Any]) -> None:
    assert evaluate_key(parse_config(parsed(entry))) == entry["expect_key"]


def test_config_dir_is_the_yaml_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("workdir: /srv\nkey: svc\ncommand: run {config_dir}/x {status_file}\n", encoding="utf-8")
    config = load_config(path)
    assert config.raw["config_dir"] == str(tmp_path)
    assert evaluate_command(config, "svc", "/s.json") == f"run {tmp_path}/x /s.json"


def test_handshake_mapping() -> None:
    config = minimal(handshake={"path": "/api/health", "parameters": {"verbose": True, "depth": 2, "q": "a b"}})
    assert config.handshake is not None
    assert config.handshake.target == "/api/health?verbose=true&depth=2&q=a+b"
    assert minimal(handshake={"path": "x", "parameters": None}).handshake == Handshake(path="x")


def test_ssh_target() -> None:
    assert minimal(hostname="web.example.com").ssh_target == "web.example.com"
    assert minimal(hostname="web", ssh_hostname="me@gateway").ssh_target == "me@gateway"
    with pytest.raises(ConfigError, match=r"^hostname: "):
        _ = minimal().ssh_target


@pytest.mark.parametrize(("fields", "message"), [
    ({"workdir": "data"}, "workdir: 'data' is relative; use an absolute path (/...) or one under the home "
                          "directory (~/...)"),
    ({"hostname": "a..b"}, "hostname: 'a..b' is not valid; use a host name or IP address, e.g. server.example.com"),
    ({"tunnel": "yes"}, "tunnel: must be true or false (unquoted), got a string ('yes')"),
    ({"startup_timeout": 0}, "startup_timeout: must be more than 0 and at most 604800 seconds (7 days), got 0"),
    ({"file_parameters": {"a": [1, float("nan")]}},
     "file_parameters.a[1]: nan is not a JSON number; use a finite number, or quote it"),
    ({"handshake": {"parameters": []}},
     "handshake.parameters: must be a mapping of query parameters (name: value), got a list"),
    ({"scheduler": {"type": "slurm", "options": ["-p short"]}},
     "scheduler.options: a string ('-p short') is not one '--flag' or '--flag=value' word; write e.g. "
     "'--partition=short', not '-p short' or '--partition short'"),
    ({"scheduler": {"type": "slurm", "options": ["--time=1:00:00", "--output=/tmp/x"]}},
     "scheduler.options: '--output=/tmp/x' would take over --output, which the launcher sets itself (its log, "
     "job name and working directory are what it watches); drop it"),
    ({"scheduler": {"type": "slurm", "options": ["--out=/tmp/x"]}},  # sbatch takes an abbreviation as the flag
     "scheduler.options: '--out=/tmp/x' would take over --output, which the launcher sets itself (its log, "
     "job name and working directory are what it watches); drop it"),
    ({"scheduler": {"type": "slurm", "options": ["--job=x"]}},
     "scheduler.options: '--job=x' would take over --job-name, which the launcher sets itself (its log, "
     "job name and working directory are what it watches); drop it"),
    ({"scheduler": {"type": "slurm"}, "network_interface": "localhost"},
     "network_interface: localhost is not reachable from the login node, where a batch job's service is reached; "
     "use 0.0.0.0 (the default with 'scheduler')"),
])
def test_messages_say_what_to_do(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        minimal(**fields)
    assert str(info.value) == message


def test_file_parameters_and_meta_fit_the_state_files_that_keep_them() -> None:
    """Status and client files over statefiles.MAX_STATE_BYTES count as corrupt: the data they keep is capped."""
    half = "x" * 300_000
    assert minimal(file_parameters={"a": half}).file_parameters == {"a": half}
    assert minimal(meta={"b": half}).meta == {"b": half}
    with pytest.raises(ConfigError) as info:
        minimal(file_parameters={"a": half}, meta={"b": half})
    assert str(info.value) == ("file_parameters, meta: too large (600018 bytes as JSON, at most 524288 together); "
                               "put large data in a file the service reads")


def test_duplicate_keys_are_refused_at_any_depth_but_merge_keys_still_work() -> None:
    with pytest.raises(ConfigError,
                       match=r"at line 1, column 11 \(field 'a'\): duplicate key 'b'; keep only one of them$"):
        parse_yaml("a: {b: 1, b: 2}")
    assert parse_yaml("base: &b {x: 1, y: 2}\nother: {<<: *b, x: 3}") == {
        "base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}


def test_alias_bomb_is_refused_quickly() -> None:
    """Every field is measured, so the first field that expands too far is named (here before file_parameters)."""
    lines = ["workdir: /srv", "key: svc", "command: run {status_file}", "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("file_parameters: {bomb: *l8}")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"^l\d: more than 100000 values"):
        parse_config(parse_yaml("\n".join(lines)))
    assert time.monotonic() - start < 2


def test_ipv6_pattern_matches_what_ipaddress_accepts() -> None:
    """The host patterns spell out IPv6 (the schema must); compare with the standard library."""
    def is_ipv6(text: str) -> bool:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return "." not in text and "%" not in text  # embedded IPv4 and zone ids are not accepted

    rng = random.Random(7)
    samples = ["".join(rng.choice("0af1::.") for _ in range(rng.randint(1, 20))) for _ in range(20_000)]
    for _ in range(300):
        groups = [format(rng.choice([0, rng.randrange(65536)]), "x") for _ in range(8)]
        samples.append(":".join(groups))
        start = rng.randrange(8)
        end = rng.randrange(start + 1, 9)
        samples.append(":".join(groups[:start]) + "::" + ":".join(groups[end:]))
    for text in samples:
        assert bool(re.fullmatch(IPV6_PATTERN, text)) == is_ipv6(text), text


@pytest.mark.parametrize("path", ["", "healthcheck", "/api/v1/status", "a b/c", "ünï/cødé", "x%20y", "a+b&c=d;e",
                                  "~user/@:!$'()*,", "q?x#frag", "\u2603/\U0001f600", "tab\there"])
@pytest.mark.parametrize("parameters", [{}, {"a": "1"}, {"name with space": "v&w=x", "ü": "/path?x", "plus": "+"}])
def test_a_handshake_target_is_encoded_as_urllib_would(path: str, parameters: dict[str, str]) -> None:
    """The warm path encodes the request target itself (no urllib.parse): byte for byte as urllib does."""
    from urllib.parse import quote, urlencode

    expected = "/" + quote(path.lstrip("/"), safe="/:@!$&'()*+,;=-._~%")
    if parameters:
        expected += "?" + urlencode(parameters)
    assert Handshake(path, parameters).target == expected


# ---------------------------------------------------------------- what a newcomer mistypes

def config_error(text: str, tmp_path: Path) -> str:
    path = tmp_path / "service.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        evaluate_command(config, evaluate_key(config), "/s.json")
    return str(info.value)


def test_a_misspelt_required_field_is_named_before_the_missing_one(tmp_path: Path) -> None:
    assert config_error("workdir: /w\nkey: k\ncomand: serve\n", tmp_path) == \
        "comand: not a field of the launcher; did you mean 'command'? (command: required field is missing)"


def test_an_unquoted_colon_in_a_value_says_to_quote_it(tmp_path: Path) -> None:
    message = config_error("workdir: /w\nkey: k\ncommand: serve --listen: 8000\n", tmp_path)
    assert message.startswith("config: invalid YAML in ")
    assert "(field 'command'): mapping values are not allowed" in message
    assert message.endswith("; a ': ' inside a value: quote the whole value, e.g. command: '...'")


def test_port_in_the_key_says_where_it_is_known(tmp_path: Path) -> None:
    message = config_error("workdir: /w\nkey: svc-{port}\ncommand: serve --port {port}\n", tmp_path)
    assert message.startswith("key: unknown name 'port' in template (known: ")
    assert message.endswith("; {port} is known in command only: the port the launch chooses for a server that "
                            "writes no status file (see the docs' Stock servers page)")
    assert config_error("workdir: /w\nkey: k\ncommand: serve --port {ports}\n", tmp_path).endswith(
        "; did you mean 'port'?")


# What the config's string checks must answer: each pattern (the schema's), as config.py used it.
CHECKS = [
    ("CONTROL_PATTERN", re.search, config_module.has_control),
    ("WORKDIR_PATTERN", re.match, config_module.is_absolute_workdir),
    ("HOST_PATTERN", re.fullmatch, config_module.is_host),
    ("SSH_HOST_PATTERN", re.fullmatch, config_module.is_ssh_host),
    ("PORT_NAME_PATTERN", re.fullmatch, config_module.is_port_name),
    ("CONDA_PATTERN", re.fullmatch, config_module.is_conda),
    ("HANDSHAKE_REFUSED_PATTERN", re.search, config_module.is_refused_in_handshake),
]
# Every character the patterns name, their neighbours in ASCII, and non-ASCII look-alikes: digits, letters
# and spaces that str methods (isdigit, isalpha, isspace) would take for ASCII ones.
ALPHABET = ("aAfFgzZ09_-.:@/~+,%=?# \t\n\r\x00\x0b\x0c\x1c\x85\xa0\u2028\u3000é٣𝟘ſK!$&'()*;<>[]\\^`{|}\"\x7f")
ADVERSARIAL = [
    "", "~", "~\n", "~/", "/", "//", "~user", "a", "a.", ".a", "a..b", "-a", "a-", "_a_", "a" * 63, "a" * 64,
    ".".join(["a" * 63] * 4), ".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 3 + ["a" * 62]),
    "::", ":::", "::1", "1::", "1::2", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:8::", "::2:3:4:5:6:7:8", "::1:2:3:4:5:6:7:8", "1:2:3::4:5:6:7",
    "1:2:3:4::5:6:7:8", "fffff::", "ffff::", "0:0:0:0:0:0:0:0\n", "a\n", "u@a", "@a", "u@", "u@@a", "u@a@b",
    "." + "u" * 63 + "@h", "u" * 64 + "@h", "u" * 65 + "@h", "u.-@h", "x" * 63 + "-", "_" * 64, "_" * 65,
    "/" + "x" * 4095, "/" + "x" * 4096, "x" * 255, "x" * 256, ".x", "/a b", "a/b", "path?q", "p#f", "p\u3000",
    "p\x1c", "p\x85", "p\u200b", "\ufeff",
]


def test_each_config_check_answers_as_its_pattern() -> None:
    rng = random.Random(11)
    samples = [*ADVERSARIAL, *("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
                               for _ in range(30_000))]
    for _ in range(3000):  # near misses of valid values: a valid one with one character changed
        valid = rng.choice(["server.example.com", "alice@host-1.x_y", "fe80::1:2", "1:2:3:4:5:6:7:8", "my_port-2",
                            "/opt/conda/envs/x+y", "py3.11", "~/work", "/srv/a"])
        at = rng.randrange(len(valid) + 1)
        samples.append(valid[:at] + rng.choice(ALPHABET) + valid[at + rng.randint(0, 1):])
    for name, match, check in CHECKS:
        pattern = getattr(config_module, name)
        for text in samples:
            assert check(text) == bool(match(pattern, text)), (name, text)


def test_str_isspace_is_what_a_regex_calls_whitespace() -> None:
    """is_refused_in_handshake relies on it, for every character there is."""
    spaces = re.compile(r"\s")
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() != bool(spaces.match(c))] == []
