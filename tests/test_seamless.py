"""Seamless, the original's main user, end to end with this launcher in its place.

Seamless's client packages come from PyPI (pinned), in a venv of this
machine; they pull in remote-http-launcher 0.4.5, over which this project is
installed, as a Seamless user who switches does. Seamless's own code then does
what it does: from ~/.seamless/clusters.yaml and the project's seamless.yaml
it builds the configs of a hashserver and a database server (keys, templates
with ``str.format``, ``conda``, ``log_level: minimal``, ``log_file`` under
~/.remote-http-launcher/logs/...) and passes them to
``remote_http_launcher.run()``. On a cluster, the services (hashserver and
seamless-database from PyPI) run on the SSH test server in a conda
environment (a stand-in conda whose environment is a venv), reached directly
or through tunnels; with SEAMLESS_CACHE set they run on this machine. A
buffer and a transformation result are written and read through Seamless's
client API and over plain HTTP, and a second client process reuses both
services as they are."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import yaml

from tests.conftest import ROOT, alive, kill_services, stop_brokers
from tests.interop import give_tree, install_stand_in_conda, pip_install, pip_venv, remove_stand_in_conda
from tests.ssh_client import ALIAS, REMOTE_STATE, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

#: Seamless's client side: the packages that launch services through remote-http-launcher (they require it
#: unpinned, so pip takes 0.4.5) and the Seamless packages they import.
CLIENT_REQUIREMENTS = ("seamless-config==0.3.2", "seamless-remote==0.4.0", "seamless-core==0.1.4",
                       "seamless-transformer==0.6.1")
ORIGINAL_PULLED_IN = "0.4.5"
#: The services Seamless's tools.yaml launches, by the names it runs them (`hashserver`, `seamless-database`).
SERVER_REQUIREMENTS = ("hashserver==1.1.0", "seamless-database==2.1.0",
                       "aiofiles==25.1.0")  # hashserver imports it without declaring it
SERVER_VENV = "seamless-venv"  # in the account's home
HELPERS_VENV = "miniforge3"  # ... first on the PATH Seamless gives the rhl-* helpers it runs there
CONDA_ENV = "seamless"
CLUSTER, PROJECT = "rhlcluster", "rhlproject"
BUFFERS, DATABASE = "seamless-buffers", "seamless-db"  # the cluster's bufferdir and database_dir, under ~
#: Seamless's keys: `<tool>-<cluster>-<mode>-<project>` (tools.yaml of seamless-config).
KEYS = {tool: f"{tool}-{CLUSTER}-rw-{PROJECT}" for tool in ("hashserver", "database")}
#: ... and with SEAMLESS_CACHE set: its own local cluster and the top-level project.
LOCAL_KEYS = {tool: f"{tool}-__SEAMLESS_CACHE__-rw-__TOPLEVEL__" for tool in ("hashserver", "database")}
STATE = ".remote-http-launcher"  # the launcher's directory in a home
CLEANUP = stop_services_script(f'rm -rf "$HOME/.remote-http-launcher" "$HOME/{BUFFERS}" "$HOME/{DATABASE}"')

#: One Seamless client process: `write TEXT` stores a buffer and a transformation result (its checksum as the
#: result of a made-up transformation), `read CHECKSUM` fetches a buffer; both print what they found as JSON.
#: Checksums are SHA-256 (seamless-core's and hashserver's default).
CLIENT = r"""
import asyncio, importlib.metadata, json, os, sys
import remote_http_launcher, seamless_config
from seamless import Buffer, Checksum
import seamless_remote.buffer_remote as buffers
import seamless_remote.database_remote as database
from seamless_remote import buffer_client, database_client

seamless_config.init(workdir=os.getcwd())  # ./seamless.yaml and ~/.seamless/clusters.yaml
buffers.ensure_initialized()  # remote_http_launcher.run() of the hashserver config Seamless built
database.ensure_initialized()  # ... and of the database server's
configs = [dict(c) for c in (*buffer_client._launcher_cache.keys(), *database_client._launcher_cache.keys())]
out = {"launcher": remote_http_launcher.__file__, "version": importlib.metadata.version("remote-http-launcher"),
       "configs": configs,  # the keys as the seamless-service commands compute them:
       "keys": [remote_http_launcher.Configuration.from_mapping(config).key for config in configs],
       "hashserver": buffers._write_server_clients[0].url, "database": database._write_database_clients[0].url}
TRANSFORMATION = Checksum(bytes(range(32)))

async def main():
    if sys.argv[1] == "write":
        buffer = Buffer(sys.argv[2].encode())
        checksum = buffer.get_checksum()
        out["written"] = await buffers.write_buffer(checksum, buffer)
        await database.set_transformation_result(TRANSFORMATION, checksum)
        out["checksum"] = checksum.hex()
    else:
        found = await buffers.get_buffer(Checksum(sys.argv[2]))
        out["read"] = None if found is None else found.content.decode()
    result = await database.get_transformation_result(TRANSFORMATION)
    out["result"] = None if result is None else result.hex()

asyncio.run(main())
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def seamless_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv of this machine with Seamless's client packages from PyPI and this project installed over the
    0.4.5 they pulled in (non-editable, from a copy of the sources: nothing is built in the worktree); the
    services too, for SEAMLESS_CACHE's local ones."""
    root = tmp_path_factory.mktemp("seamless-client")
    venv = root / "venv"
    pip_venv(sys.executable, venv, CLIENT_REQUIREMENTS + SERVER_REQUIREMENTS, "the Seamless test")
    assert installed_version(venv) == ORIGINAL_PULLED_IN
    pip_install(venv, [str(source_copy(root / "source"))], "the Seamless test")
    return venv


def source_copy(source: Path) -> Path:
    """This project's sources copied to `source`, to be installed from (nothing is built in the worktree)."""
    shutil.copytree(ROOT / "remote_http_launcher", source / "remote_http_launcher",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    return source


def installed_version(venv: Path) -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import importlib.metadata as m; "
                           "print(m.version('remote-http-launcher'))"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="session")
def seamless_server(sshd: SSHServer) -> Iterator[str]:
    """hashserver and seamless-database from PyPI in a venv of the server's account; its path."""
    venv = f"{sshd.home}/{SERVER_VENV}"
    pip_venv(sshd.python, venv, SERVER_REQUIREMENTS, "the Seamless test")
    give_tree(sshd, venv)
    yield venv
    sshd.run(f"rm -rf {venv}")


@pytest.fixture(scope="session")
def server_helpers(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This project installed on the server where Seamless looks for the rhl-* helpers it runs over ssh
    (`PATH=$HOME/miniforge3/bin:...`), as a user installs it there in place of 0.4.5; the venv's path."""
    venv = f"{sshd.home}/{HELPERS_VENV}"
    pip_venv(sshd.python, venv, [str(source_copy(tmp_path_factory.mktemp("server-source")))], "the Seamless test")
    give_tree(sshd, venv)
    yield venv
    sshd.run(f"rm -rf {venv}")


@pytest.fixture
def server(sshd: SSHServer, seamless_server: str) -> Iterator[SSHServer]:
    """The server with the services' conda environment; cleaned (services killed, state removed) after."""
    install_stand_in_conda(sshd, {CONDA_ENV: seamless_server})
    yield sshd
    sshd.run(CLEANUP)
    remove_stand_in_conda(sshd)


@pytest.fixture
def home() -> Iterator[Path]:
    """The Seamless user's HOME. Short, as homes are: the connection broker's socket lives under it, and a
    Unix socket path has at most 107 bytes. Services launched locally and brokers are stopped after."""
    path = Path(tempfile.mkdtemp(prefix="rhl-seamless-"))
    yield path
    stop_brokers(path / STATE / "brokers")
    kill_services(path / STATE)
    shutil.rmtree(path, ignore_errors=True)


def cluster_definition(server: SSHServer, tunnel: bool) -> dict[str, Any]:
    """~/.seamless/clusters.yaml: one frontend, the server, with a hashserver and a database in the conda
    environment. Direct: its address as hostname (the alias logs in), services on every interface; tunnel:
    the alias as hostname, services on the server's localhost (hashserver's default)."""
    frontend: dict[str, Any] = {"hostname": ALIAS} if tunnel else {"hostname": server.host, "ssh_hostname": ALIAS}
    services = {"hashserver": {"bufferdir": f"~/{BUFFERS}"}, "database": {"database_dir": f"~/{DATABASE}"}}
    for name, service in services.items():
        service["conda"] = CONDA_ENV
        if tunnel:
            service["network_interface"] = "127.0.0.1"
        else:
            service["network_interface"] = "0.0.0.0"
        frontend[name] = service
    return {CLUSTER: {"tunnel": tunnel, "frontends": [frontend]}}


def seamless(venv: Path, home: Path, project: Path, *args: str, **env: str) -> dict[str, Any]:
    """A Seamless client process (CLIENT) with `home` as HOME, in the project directory, the venv's bin
    first on PATH (as activated), `env` added."""
    environ = {key: value for key, value in os.environ.items()
               if key not in ("REMOTE_HTTP_LAUNCHER_DIR", "SSH_AUTH_SOCK")}
    environ.update(env, HOME=str(home), PATH=f"{venv}/bin:{os.environ['PATH']}")
    done = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", CLIENT, *args], capture_output=True, text=True,
                          cwd=project, env=environ, timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"Seamless client failed:\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Services(NamedTuple):
    """Where Seamless's services run: their keys by tool, and how to read a key's status file and log there."""

    keys: dict[str, str]
    state: Callable[[str], dict[str, Any] | None]
    log: Callable[[str], str]

    def hashserver_starts(self) -> int:
        """How many times hashserver (a uvicorn app) started since its log was truncated (at its launch)."""
        return self.log(self.keys["hashserver"]).count("Uvicorn running on")


def two_clients(venv: Path, home: Path, project: Path, services: Services, **env: str) -> dict[str, Any]:
    """A Seamless client launches both services and stores a buffer and a transformation result; a buffer is
    PUT over HTTP; a second client process finds both and reuses the services as they are. The first
    client's output."""
    first = seamless(venv, home, project, "write", "a buffer written by Seamless", **env)

    # Seamless ran this project's launcher (not the 0.4.5 it pulled in), with the configs it built itself.
    assert first["launcher"].startswith(str(venv)) and first["version"] != ORIGINAL_PULLED_IN
    assert sorted(first["keys"]) == sorted(services.keys.values())
    for config in first["configs"]:
        assert ".format(" in config["command"] and ".strip(" in config["key"] and config["log_level"] == "minimal"
    records = {}
    for tool, key in services.keys.items():
        record = services.state(key)
        assert record is not None and record["status"] == "running" and alive(record["pid"]), (tool, record)
        records[tool] = record
    assert services.hashserver_starts() == 1

    # What Seamless wrote is there over plain HTTP, and what is PUT over HTTP is there for Seamless.
    written = b"a buffer written by Seamless"
    assert first["written"] is True and first["checksum"] == hashlib.sha256(written).hexdigest()
    assert first["result"] == first["checksum"]  # the database's transformation result
    with urllib.request.urlopen(f"{first['hashserver']}/{first['checksum']}", timeout=10) as response:
        assert response.read() == written
    put = b"a buffer PUT over HTTP"
    request = urllib.request.Request(f"{first['hashserver']}/{hashlib.sha256(put).hexdigest()}", data=put,
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)

    second = seamless(venv, home, project, "read", hashlib.sha256(put).hexdigest(), **env)

    assert second["read"] == put.decode() and second["result"] == first["checksum"]
    assert (second["hashserver"], second["database"]) == (first["hashserver"], first["database"])
    for tool, record in records.items():  # the same processes (PID, start time, token): nothing launched
        assert services.state(services.keys[tool]) == record and alive(record["pid"])
    assert services.hashserver_starts() == 1
    return first


def project_dir(tmp_path: Path, commands: list[Any]) -> Path:
    """A Seamless project: a directory with its seamless.yaml (a list of commands)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "seamless.yaml").write_text(yaml.safe_dump(commands))
    return project


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_seamless_cluster_over_ssh(seamless_client: Path, server: SSHServer, home: Path, tmp_path: Path,
                                   tunnel: bool) -> None:
    server.write_ssh_config(home, ALIAS)
    (home / ".seamless").mkdir()
    (home / ".seamless" / "clusters.yaml").write_text(yaml.safe_dump(cluster_definition(server, tunnel)))
    project = project_dir(tmp_path, [{"cluster": CLUSTER}, {"project": PROJECT}, {"execution": "process"},
                                     {"persistent": True}])
    services = Services(KEYS, partial(remote_state, server),
                        lambda key: server.run(f"cat {REMOTE_STATE}/{key}.log").stdout)

    first = two_clients(seamless_client, home, project, services)

    for config in first["configs"]:
        assert config["conda"] == CONDA_ENV and config.get("tunnel", False) is tunnel
    log_dir = home / STATE / "logs" / CLUSTER / PROJECT  # Seamless's log_file, made for it
    assert (log_dir.stat().st_mode & 0o777) == 0o700
    assert {(path.name, path.stat().st_mode & 0o777) for path in log_dir.iterdir()} >= {
        ("hashserver.log", 0o600), ("database.log", 0o600)}
    brokers = home / STATE / "brokers"
    assert list(brokers.glob("*.sock")), [path.read_text() for path in brokers.glob("*.log")]  # one SSH login


def test_seamless_cache_runs_the_services_locally(seamless_client: Path, home: Path, tmp_path: Path) -> None:
    """SEAMLESS_CACHE=DIR: Seamless's own local cluster, launched without SSH (no hostname in its configs)."""
    project = project_dir(tmp_path, [])
    state = home / STATE / "server"
    services = Services(LOCAL_KEYS, lambda key: json.loads((state / f"{key}.json").read_text()),
                        lambda key: (state / f"{key}.log").read_text())

    first = two_clients(seamless_client, home, project, services, SEAMLESS_CACHE=str(tmp_path / "cache"))

    assert all("hostname" not in config for config in first["configs"])
    assert first["hashserver"].startswith("http://localhost:")


def service_command(venv: Path, home: Path, project: Path, bin_dir: Path, *args: str
                    ) -> subprocess.CompletedProcess[str]:
    """One of Seamless's seamless-service-* commands, as its user runs it in the project directory: it runs
    the rhl-* helpers here and, over `ssh` (the binary, with the test's ~/.ssh/config: `bin_dir`), on the
    server."""
    environ = {key: value for key, value in os.environ.items()
               if key not in ("REMOTE_HTTP_LAUNCHER_DIR", "SSH_AUTH_SOCK")}
    environ.update(HOME=str(home), PATH=f"{bin_dir}:{venv}/bin:{os.defpath}",  # no other venv's helpers
                   RHL_TEST_SSH_CONFIG=str(home / ".ssh" / "config"))
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=project,
                          env=environ, timeout=120, stdin=subprocess.DEVNULL)


def test_seamless_service_commands_run_our_helpers(seamless_client: Path, server: SSHServer, server_helpers: str,
                                                   home: Path, tmp_path: Path) -> None:
    """seamless-service-ps (client and --server), -logs, -inspect, -stop and -rm on the services Seamless
    launched through run(), with this project in place of 0.4.5 on both sides: the rhl-* helpers they run
    are ours (remote_http_launcher/helpers/)."""
    if shutil.which("ssh") is None:
        pytest.fail("Seamless runs the server's helpers with the ssh binary (Debian's openssh-client)", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F "$RHL_TEST_SSH_CONFIG" "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    server.write_ssh_config(home, ALIAS)
    (home / ".seamless").mkdir()
    (home / ".seamless" / "clusters.yaml").write_text(yaml.safe_dump(cluster_definition(server, False)))
    project = project_dir(tmp_path, [{"cluster": CLUSTER}, {"project": PROJECT}, {"execution": "process"},
                                     {"persistent": True}])
    launched = seamless(seamless_client, home, project, "write", "a buffer")
    ports = {tool: int(url.rsplit(":", 1)[1]) for tool, url in
             (("hashserver", launched["hashserver"]), ("database", launched["database"]))}
    records = {tool: remote_state(server, key) for tool, key in KEYS.items()}
    command = partial(service_command, seamless_client, home, project, bin_dir)

    def ps(*args: str) -> list[dict[str, Any]]:
        done = command("seamless-service-ps", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    client = {row["service"]: row for row in ps()}  # rhl-ps --client --json, here
    assert {tool: (row["port"], row["key"], row["cluster"]) for tool, row in client.items()} == {
        tool: (ports[tool], KEYS[tool], CLUSTER) for tool in KEYS}
    on_server = {row["service"]: row for row in ps("--server", "--cluster", CLUSTER)}  # rhl-ps --json over ssh
    assert {tool: (row["process"], row["port"], row["key"], row["project"]) for tool, row in on_server.items()} == {
        tool: ("running", record and record["port"], KEYS[tool], PROJECT) for tool, record in records.items()}

    logs = command("seamless-service-logs", "--service", "hashserver")
    assert logs.returncode == 0 and "Uvicorn running on" in logs.stdout, logs.stderr
    tail = command("seamless-service-logs", "--service", "hashserver", "--tail", "1")
    assert tail.returncode == 0 and tail.stdout == logs.stdout.splitlines(keepends=True)[-1]
    inspected = command("seamless-service-inspect", "--service", "database")
    assert inspected.returncode == 0 and json.loads(inspected.stdout) == records["database"], inspected.stderr

    stopped = command("seamless-service-stop", "--service", "hashserver")
    assert (stopped.returncode, stopped.stdout) == (0, f"{KEYS['hashserver']}: stopped\n"), stopped.stderr
    hashserver = records["hashserver"]
    assert hashserver is not None and not alive(hashserver["pid"])
    assert {row["service"]: row["process"] for row in ps("--server", "--cluster", CLUSTER)} == {
        "hashserver": "stale", "database": "running"}
    removed = command("seamless-service-rm", "--service", "hashserver")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [f"removed {server.home}/{STATE}/server/{KEYS['hashserver']}.json",
                                           f"removed {home}/{STATE}/client/{KEYS['hashserver']}.json"]
    assert [row["service"] for row in ps("--server", "--cluster", CLUSTER)] == ["database"]
    assert [row["service"] for row in ps()] == ["database"]

    everything = command("seamless-service-stop", "--cluster", CLUSTER)  # rhl-ps, then rhl-stop of its keys
    assert (everything.returncode, everything.stdout) == (0, f"{KEYS['database']}: stopped\n"), everything.stderr
    cleared = command("seamless-service-rm", "--cluster", CLUSTER)
    assert cleared.returncode == 0 and ps("--server", "--cluster", CLUSTER) == [] and ps() == [], cleared.stderr
