"""Drop-in for the original remote-http-launcher's users: its config fields and its API, for real.

Seamless (its main user) calls `run(mapping)` and `Configuration.from_mapping(mapping).key`; its dask
configs check the scheduler's dashboard with `handshake: {port_name: dashboard_port}`. The configs
the original accepts live in tests/data/original_configs.yaml with what each must give.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

import remote_http_launcher
from remote_http_launcher import ConfigError, Configuration, HandshakeError, LauncherError, main, run
from remote_http_launcher.config import evaluate_command
from tests.conftest import cli
from tests.remote import RemoteConfig
from tests.ssh_client import remote_state

if TYPE_CHECKING:
    from tests.sshd import SSHServer

Factory = Callable[..., dict[str, Any]]
CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "original_configs.yaml").read_text())
DASHBOARD = {"path": "healthcheck", "port_name": "dashboard_port"}


def get(port: int, path: str = "/healthcheck") -> bytes:
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
        return body


def state_files(rhl_dir: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(server status file, client connection file) of a local service."""
    server: dict[str, Any] = json.loads((rhl_dir / "server" / f"{key}.json").read_text())
    client: dict[str, Any] = json.loads((rhl_dir / "client" / f"{key}.json").read_text())
    return server, client


# ---------------------------------------------------------------- the original's public names

def test_the_original_imports_work() -> None:
    from remote_http_launcher import Configuration as C
    from remote_http_launcher import LauncherError as E
    from remote_http_launcher import main as m
    from remote_http_launcher import run as r

    assert (C, E, m, r) == (Configuration, LauncherError, main, run)
    assert issubclass(LauncherError, RuntimeError) and issubclass(ConfigError, RuntimeError)


def test_main_is_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "/nonexistent/service.yaml"]) == 2  # a config error, returned like the original's
    assert "config: file '/nonexistent/service.yaml' not found" in capsys.readouterr().err


def test_configuration_from_mapping_gives_the_evaluated_key_and_the_fields(tmp_path: Path) -> None:
    mapping = {"workdir": "/srv/hashes", "key": "hashserver-{workdir.strip('/').replace('/', '--')}",
               "command": "hashserver {workdir} --port-range {port_start} {port_end}", "port_start": 5000,
               "port_end": 5999, "hostname": "cluster.example.org", "tunnel": True, "conda": "seamless",
               "handshake": DASHBOARD, "file_parameters": {"a": 1}, "meta": {"role": "hashserver"}}
    cfg = Configuration.from_mapping(mapping)
    assert cfg.key == "hashserver-srv--hashes"
    assert (cfg.workdir, cfg.hostname, cfg.ssh_hostname, cfg.tunnel, cfg.conda_env) == \
        ("/srv/hashes", "cluster.example.org", "cluster.example.org", True, "seamless")
    assert (cfg.handshake.path, cfg.handshake.port_name) == ("healthcheck", "dashboard_port")
    assert cfg.file_parameters == {"a": 1} and cfg.meta == {"role": "hashserver"}
    assert cfg.namespace["key"] == cfg.key and cfg.namespace["port_start"] == 5000
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(mapping))
    assert Configuration.from_yaml(path).key == cfg.key
    with pytest.raises(RuntimeError, match=r"^workdir: required field is missing"):  # as `except RuntimeError` sees it
        Configuration.from_mapping({"key": "k", "command": "c"})


@pytest.mark.parametrize("entry", CORPUS["configs"], ids=[entry["id"] for entry in CORPUS["configs"]])
def test_configs_the_original_accepts_are_accepted_alike(entry: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # their templates read every extra field: no warning either
        cfg = Configuration.from_mapping(entry["config"])
    assert cfg.key == entry["key"]
    assert evaluate_command(cfg.config, cfg.key, "/state/KEY.json") == entry["command"]


# ---------------------------------------------------------------- handshake on a named port, locally

def test_handshake_on_a_named_port(rhl_dir: Path, demo_config: Factory) -> None:
    """Like a dask scheduler: its main port speaks no HTTP, its dashboard does."""
    config = demo_config(args="--dashboard", handshake=DASHBOARD)
    payload = run(config)
    assert get(payload["dashboard_port"]) == b"ok\n"
    assert run(config) == payload  # the warm path checks the dashboard too
    with pytest.raises(HandshakeError, match=r"no HTTP answer"):  # the main port is not HTTP: port_name matters
        run(demo_config(args="--dashboard", key="plain-{network_interface}", handshake="healthcheck"))


def test_a_named_port_the_service_never_reports_is_a_clear_failure(rhl_dir: Path, demo_config: Factory) -> None:
    config = demo_config(handshake={"path": "healthcheck", "port_name": "dashboard_port"})
    with pytest.raises(HandshakeError, match=r"it reported no port 'dashboard_port'"):
        run(config)


# ---------------------------------------------------------------- meta and the logging fields, locally

def test_meta_is_kept_in_both_state_files_and_shown_by_status_and_list(rhl_dir: Path,
                                                                        config_file: Callable[..., Path]) -> None:
    meta = {"role": "jobserver", "workers": [1, 2], "nested": {"ok": True}}
    path = config_file(meta=meta)
    payload = run(path)
    key = Configuration.from_yaml(path).key
    server, client = state_files(rhl_dir, key)
    assert server["meta"] == meta and client["meta"] == meta and payload["meta"] == meta
    status = cli("status", path, "--json")
    assert json.loads(status.stdout)["meta"] == meta
    listing = json.loads(cli("list", "--json").stdout)
    assert [entry["meta"] for entry in listing["services"] if entry["key"] == key] == [meta]
    assert remote_http_launcher.status(path)["meta"] == meta


def test_meta_must_be_a_json_mapping(tmp_path: Path, config_file: Callable[..., Path]) -> None:
    result = cli(config_file(meta=["a"]))
    assert result.returncode == 2 and result.stderr == "error: meta: must be a mapping (name: value), got a list\n"


def test_run_honours_the_logging_fields_of_the_config(rhl_dir: Path, tmp_path: Path, demo_config: Factory,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    log_file, debug_file = tmp_path / "launcher.log", tmp_path / "debug.log"
    config = demo_config(log_level="basic", log_file=str(log_file), debug_log_file=str(debug_file))
    payload = run(config)
    assert "launching service on localhost" in log_file.read_text()
    assert "ready: http://" in log_file.read_text() and "waiting for the service" in debug_file.read_text()
    assert "launching service on localhost" in capsys.readouterr().err  # basic: phase lines on stderr
    assert "log_level" not in Configuration.from_mapping(config).raw  # not a template variable
    assert run({**config, "log_level": None, "log_file": None, "debug_log_file": None}) == payload
    assert capsys.readouterr().err == ""  # nothing asked, nothing printed


def test_a_command_line_flag_wins_over_the_config(rhl_dir: Path, tmp_path: Path,
                                                  config_file: Callable[..., Path]) -> None:
    from_config, from_flag = tmp_path / "config.log", tmp_path / "flag.log"
    path = config_file(log_level="basic", log_file=str(from_config))
    result = cli(path, "--log-file", str(from_flag), "--log-level", "minimal")
    assert result.returncode == 0, result.stderr
    assert "ready: http://" in from_flag.read_text() and not from_config.exists()
    result = cli(path)  # the config's own: phase lines (basic) and its file
    assert "checking connection file" in result.stderr and "reconnected" in from_config.read_text()


def test_log_files_in_missing_directories_are_created_private(rhl_dir: Path, tmp_path: Path,
                                                               config_file: Callable[..., Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Seamless asks for ~/.remote-http-launcher/logs/<cluster>/<project>/hashserver.log: the original creates
    the parents (`~` expanded), so must we, for the config fields, the flags and run() alike."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    logs = home / ".remote-http-launcher" / "logs" / "cluster" / "project"
    path = config_file(log_level="basic", log_file="~/.remote-http-launcher/logs/cluster/project/hashserver.log",
                       debug_log_file="~/.remote-http-launcher/logs/cluster/project/debug.log")
    result = cli(path)
    assert result.returncode == 0, result.stderr
    assert "ready: http://" in (logs / "hashserver.log").read_text()
    assert "waiting for the service" in (logs / "debug.log").read_text()
    for directory in (logs, logs.parent, logs.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    for name in ("hashserver.log", "debug.log"):
        assert (logs / name).stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o755  # an existing directory is left as it is
    flag_log = tmp_path / "a" / "b" / "flag.log"
    assert cli(path, "--log-file", str(flag_log)).returncode == 0
    assert "reconnected" in flag_log.read_text() and flag_log.parent.stat().st_mode & 0o777 == 0o700
    from_api = tmp_path / "api" / "c" / "run.log"
    run({**yaml.safe_load(path.read_text()), "log_file": str(from_api)})
    assert "reconnected" in from_api.read_text()


@pytest.mark.parametrize("case", ["file-in-the-way", "a-directory", "a-symlink"])
def test_a_log_file_that_cannot_be_written_is_a_config_error(rhl_dir: Path, tmp_path: Path, case: str,
                                                             config_file: Callable[..., Path]) -> None:
    blocker = tmp_path / "blocker"
    if case == "file-in-the-way":
        blocker.write_text("")
        target = blocker / "dir" / "launcher.log"
    elif case == "a-directory":
        blocker.mkdir()
        target = blocker
    else:
        (tmp_path / "elsewhere.log").write_text("kept\n")
        blocker.symlink_to(tmp_path / "elsewhere.log")
        target = blocker
    result = cli(config_file(log_file=str(target)))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: log_file: cannot write '{target}'")
    assert len(result.stderr.splitlines()) == 1
    assert not (rhl_dir / "server").exists()  # nothing started
    if case == "a-symlink":
        assert (tmp_path / "elsewhere.log").read_text() == "kept\n"  # never written through a link


# ---------------------------------------------------------------- odd YAML values

@pytest.mark.parametrize(("value", "message"), [
    ("9" * 5000, "config: invalid YAML in '{path}' at line 4, column 6 (field 'big'): a number with more than "
                 "4300 digits; quote it to make it a string"),
    ("0x" + "f" * 5000, "big: a number with more than 4300 digits; quote it to make it a string"),
    ("[" * 150 + "]" * 150, "big: nested more than 100 levels deep; flatten it"),
    ("x" * 1_000_001, "big: too large (more than 1000000 characters); put large data in a file the service reads"),
], ids=["decimal", "hex", "nested", "huge-string"])
def test_odd_yaml_values_are_config_errors_naming_the_field(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(f"workdir: /srv/x\nkey: k\ncommand: c\nbig: {value}\n")
    result = cli(path, "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {message.format(path=path)}\n"


def test_a_huge_config_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("workdir: /srv/x\nkey: k\ncommand: c\n" + "# padding\n" * 200_000)
    result = cli(path, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: config: {str(path)!r} is 1953 KiB; a config is at most 1024 KiB")


# ---------------------------------------------------------------- over a real sshd: direct and through a tunnel

@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_handshake_on_a_named_port_over_ssh(keyed_server: SSHServer, remote_config: RemoteConfig,
                                            tunnel: bool) -> None:
    server = keyed_server
    config = remote_config(server, tunnel=tunnel, args="--dashboard", handshake=DASHBOARD, meta={"via": "ssh"})
    payload = run(config)
    record = remote_state(server, config["key"])
    assert record is not None and record["meta"] == {"via": "ssh"} and payload["meta"] == {"via": "ssh"}
    if tunnel:  # checked through the dashboard's own forward
        assert payload["tunneled-dashboard_port"] == record["dashboard_port"]
        assert get(payload["dashboard_port"]) == b"ok\n"
    else:
        assert payload["dashboard_port"] == record["dashboard_port"]
    assert run(config) == payload


def test_main_from_the_package_root_is_the_program() -> None:
    result = subprocess.run([sys.executable, "-c", "import sys, remote_http_launcher as r; "
                             "sys.exit(r.main(['--help']))"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: remote-http-launcher" in result.stdout
