"""Shared fixtures: an isolated state directory, configs for the demo service, the CLI, the SSH client side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.posix import SIGKILL, killpg, patch_pytest
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

pytest_plugins = ["tests.sshd", "tests.kerberos", "tests.remote", "tests.slurm", "tests.gridengine", "tests.interop"]
patch_pytest()  # a no-op unless this is the POSIX-stripped run (tests/posix.py)

ROOT = Path(__file__).resolve().parent.parent
DEMO_SERVICE = ROOT / "examples" / "demo_service.py"
ENTRY_POINT = shutil.which("remote-http-launcher")


#: Under pytest-xdist (the README's `-n 2 --dist loadgroup`) tests go to the workers one at a time, except
#: these modules, each of whose groups runs whole on one worker: the test clusters one after the other (each
#: holds the machine lock of tests/machine.py while it runs: a second worker would only wait for it), and the
#: modules whose module- or session-scoped fixtures take long to set up (Seamless from PyPI; every bad config
#: run at once; a guarded sshd per policy; users made by useradd). xdist hands the larger groups out first.
XDIST_GROUPS = {"test_slurm": "clusters", "test_sge": "clusters", "test_seamless": "seamless",
                "test_config": "config", "test_guard": "guard", "test_state_trust": "state_trust"}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` by XDIST_GROUPS: xdist's own reads `xdist_group` marks from node IDs, which pytest 9
    no longer lets a plugin rewrite."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    scheduling = LoadScopeScheduling(config, log)  # each group one work unit, handed out largest first
    scheduling._split_scope = lambda nodeid: XDIST_GROUPS.get(Path(nodeid.split("::", 1)[0]).stem, nodeid)
    return scheduling


def alive(pid: int) -> bool:
    """Alive and not a zombie (test servers share this machine's PID namespace)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def kill_services(state_dir: Path) -> None:
    """Stop every service a test left behind (by the PIDs in its server status files)."""
    for status in state_dir.glob("server/*.json"):
        try:
            pid = json.loads(status.read_text()).get("pid")
            if isinstance(pid, int):
                killpg(pid, SIGKILL)
        except (ValueError, OSError):
            pass


@pytest.fixture
def rhl_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """REMOTE_HTTP_LAUNCHER_DIR for one test; services left running are killed afterwards."""
    state = tmp_path / "rhl-state"
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(state))
    yield state
    stop_brokers(state / "brokers")
    kill_services(state)


@pytest.fixture
def demo_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A factory of local demo-service configs; keyword arguments override fields."""

    def make(*, args: str = "", **fields: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "workdir": str(tmp_path / "work dir"),
            "key": "demo-{network_interface}",
            "command": f"{sys.executable} {DEMO_SERVICE} --status-file {{status_file}} "
                       f"--host {{network_interface}} {args}",
            "handshake": "healthcheck",
        }
        config.update(fields)
        return config

    return make


@pytest.fixture
def config_file(tmp_path: Path, demo_config: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    """A factory of local demo-service config files (YAML) in tmp_path; keyword arguments override fields."""

    def write(name: str = "service.yaml", **fields: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(demo_config(**fields)))
        return path

    return write


def cli(*args: str | Path, entry_point: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess (`python -m`, or the installed entry point), stdin not a terminal."""
    if entry_point:
        assert ENTRY_POINT is not None, "the remote-http-launcher script is not installed"
        command = [ENTRY_POINT, *map(str, args)]
    else:
        command = [sys.executable, "-m", "remote_http_launcher", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


IMPORT_PROBE = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
from remote_http_launcher.cli import main
code = main(sys.argv[1:])
modules = sorted(sys.modules)
import json
print(json.dumps({"code": code, "modules": modules, "opened": opened}))
"""


def probe_imports(*args: str | Path) -> tuple[dict[str, Any], str]:
    """The CLI in a subprocess without site (-S; an editable install's import hook, loaded by site, imports
    pathlib itself), the package on PYTHONPATH: its exit code, the modules it imported and the files it
    opened; and its stderr."""
    import remote_http_launcher

    package = Path(remote_http_launcher.__file__).parent
    probe = subprocess.run([sys.executable, "-S", "-c", IMPORT_PROBE, *map(str, args)], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert probe.stdout.strip(), probe.stderr
    return json.loads(probe.stdout.splitlines()[-1]), probe.stderr


# ---------------------------------------------------------------- the SSH client side (see tests/ssh_client.py)

@pytest.fixture
def client_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh client HOME: its own ~/.ssh, and no ssh-agent from the developer's session.

    In this process the machine's /etc/ssh/ssh_config is left out too (Debian's says `HashKnownHosts
    yes`), so what a test writes is all there is; CLI subprocesses still read it, as ssh would.
    """
    home = tmp_path / "client-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr("remote_http_launcher.ssh.config.SYSTEM_SSH_CONFIG", home / "no-system-ssh_config")
    yield home
    stop_brokers(home / ".remote-http-launcher" / "brokers")


def stop_brokers(directory: Path) -> None:
    """End the connection brokers whose files are in `directory` (a test's), as `disconnect` does."""
    from remote_http_launcher.broker.registry import live_brokers
    from remote_http_launcher.processes import terminate

    for _files, owner in live_brokers(directory):
        terminate(owner.pid)
        for _ in range(100):
            if not owner.same_process():
                break
            time.sleep(0.05)


@pytest.fixture(scope="session")
def remote_demo(sshd: SSHServer) -> str:
    """The demo service in the test user's home (it cannot read /work), copied over SFTP."""
    client = sshd.connect()
    try:
        target = f"{sshd.home}/demo_service.py"
        client.open_sftp().put(str(DEMO_SERVICE), target)
    finally:
        client.close()
    return target


@pytest.fixture
def ssh_config(server: SSHServer, client_home: Path) -> Path:
    """~/.ssh/config of the client HOME with the `server` (the test module's fixture) as ALIAS."""
    return server.write_ssh_config(client_home, ALIAS)
