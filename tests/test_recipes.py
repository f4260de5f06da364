"""The stock-server recipes of examples/, run for real: a dask scheduler with its dashboard and TensorBoard
over SSH through tunnels (installed from PyPI for the test server's account: tests/interop.cached_venv),
and `python -m http.server` locally. JupyterLab as a SLURM job is in tests/test_slurm.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from remote_http_launcher import run
from tests.conftest import ROOT, cli
from tests.interop import cached_venv
from tests.ssh_client import ALIAS, remote_state

if TYPE_CHECKING:
    from tests.sshd import SSHServer

#: What the recipes run on the test server, pinned (the cached venv is named by them).
STOCK_REQUIREMENTS = ("jupyterlab==4.6.6", "dask[distributed]==2026.8.0", "bokeh==3.9.2", "tensorboard==2.21.0")


@pytest.fixture(scope="session")
def stock_venv(sshd: SSHServer) -> str:
    return str(cached_venv(sshd.python, STOCK_REQUIREMENTS, "the stock-server recipes"))


def recipe(name: str, **fields: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    config.update(fields)
    return config


def on_server(server: SSHServer, config: dict[str, Any], tmp_path: Path, venv: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps({**config, "hostname": server.host, "ssh_hostname": ALIAS, "venv": venv,
                                "workdir": f"~/rhl-work/{config['key']}", "connection_persist": 0}))
    return path


def up(path: Path) -> dict[str, Any]:
    done = cli(path, "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return int(response.status), response.read()


def test_dask_scheduler_and_its_dashboard_over_ssh(keyed_server: SSHServer, stock_venv: str, tmp_path: Path) -> None:
    path = on_server(keyed_server, recipe("dask-ssh.yaml"), tmp_path, stock_venv)
    payload = up(path)
    state = remote_state(keyed_server, "dask-scheduler")
    assert state is not None and state["status"] == "running"
    assert set(state["stock_ports"]) == {"port", "dashboard_port"}
    assert (payload["tunneled-port"], payload["tunneled-dashboard_port"]) == (state["port"], state["dashboard_port"])
    # The dashboard's URL as dask printed it, on the dashboard's own forward.
    assert payload["url"] == f"http://127.0.0.1:{payload['dashboard_port']}/status"
    status, body = get(payload["url"])
    assert status == 200 and b"Dask" in body
    with socket.create_connection(("127.0.0.1", payload["port"]), timeout=10):
        pass  # the scheduler's own port (dask's protocol, not HTTP) answers through its forward
    assert cli("stop", path).returncode == 0


def test_tensorboard_over_ssh_on_a_pinned_local_port(keyed_server: SSHServer, stock_venv: str,
                                                     tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = int(probe.getsockname()[1])
    path = on_server(keyed_server, recipe("tensorboard-ssh.yaml", local_port=local), tmp_path, stock_venv)
    payload = up(path)
    assert payload["port"] == local and payload["url"] == f"http://127.0.0.1:{local}/"
    status, body = get(payload["url"])
    assert status == 200 and b"TensorBoard" in body
    assert cli("stop", path).returncode == 0


def test_http_server_locally(rhl_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "public"
    site.mkdir()
    (site / "hello.txt").write_text("hello\n")
    command = recipe("http-server.yaml")["command"].replace("python3", sys.executable, 1)
    payload = run(recipe("http-server.yaml", workdir=str(site), command=command))
    assert get(payload["url"] + "hello.txt") == (200, b"hello\n")
    assert cli("stop", json_file(tmp_path, recipe("http-server.yaml", workdir=str(site), command=command))) \
        .returncode == 0


def json_file(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "local.yaml"
    path.write_text(json.dumps(config))
    return path


def test_every_recipe_is_valid(tmp_path: Path) -> None:
    for example in ("jupyterlab-slurm.yaml", "dask-ssh.yaml", "tensorboard-ssh.yaml", "http-server.yaml"):
        done = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(ROOT / "examples" / example),
                               "--dry-run"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "<port>" in done.stdout, (example, done.stderr)
