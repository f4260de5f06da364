"""A workdir other users may write, or that another user owns, on the service's host: locally and over a real
sshd, whose test user is not root (a directory root made for uid 65534 is another user's to it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ROOT, cli
from tests.posix import python_path
from tests.ssh_client import demo_config, node_key, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

OTHER_UID = 65534  # nobody
CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')
# (mode, owner is another user, refused, the warning's words)
CASES = {
    "world-writable": (0o777, False, True, "may be written by every user"),
    "world-writable-sticky": (0o1777, False, False, "may be written by other users"),
    "group-writable": (0o775, False, False, "may be written by other users"),
    "other-owner": (0o755, True, False, "belongs to another user (uid 65534)"),
}


def _workdir(parent: Path, mode: int, other_owner: bool) -> Path:
    workdir = parent / "shared-work"
    workdir.mkdir()
    workdir.chmod(mode)
    if other_owner:
        os.chown(workdir, OTHER_UID, OTHER_UID)
    return workdir


def _check(proc: subprocess.CompletedProcess[str], workdir: Path, refused: bool, words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    if refused:
        assert proc.returncode != 0
        assert lines[-1].startswith("error: ") and f"workdir {workdir} {words}" in lines[-1], proc.stderr
        assert "chmod o-w" in lines[-1]
    else:
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in lines if line.startswith("warning: ")]
        assert len(warnings) == 1 and f"workdir {workdir} {words}" in warnings[0], proc.stderr


@pytest.mark.parametrize(("mode", "other_owner", "refused", "words"), list(CASES.values()), ids=list(CASES))
def test_local_workdir_of_others(mode: int, other_owner: bool, refused: bool, words: str, tmp_path: Path,
                                 rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    workdir = _workdir(tmp_path, mode, other_owner)
    proc = cli(str(config_file(workdir=str(workdir))))
    _check(proc, workdir, refused, words)
    assert (rhl_dir / "server" / "demo-localhost.json").exists() is not refused


@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def shared_parent() -> Iterator[Path]:
    """A directory the server's test user may enter (pytest's own are root's, 0700)."""
    parent = Path(tempfile.mkdtemp(prefix="rhl-workdir-"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent)


@pytest.mark.parametrize(("mode", "other_owner", "refused", "words"), list(CASES.values()), ids=list(CASES))
def test_ssh_workdir_of_others(mode: int, other_owner: bool, refused: bool, words: str, server: SSHServer,
                               ssh_config: Path, remote_demo: str, rhl_dir: Path, tmp_path: Path,
                               shared_parent: Path, request: pytest.FixtureRequest) -> None:
    workdir = _workdir(shared_parent, mode, other_owner)
    config: dict[str, Any] = demo_config(server, remote_demo, node_key("w-", request.node.name),
                                         workdir=str(workdir))
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin), "PYTHONPATH": python_path(ROOT)}
    assert shutil.which("ssh", path=env["PATH"]) is None
    proc = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    _check(proc, workdir, refused, words)
    assert (remote_state(server, config["key"]) is None) is refused
