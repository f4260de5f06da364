"""Local state another user could control is refused on every path, the warm one included.

Whoever controls the client directory controls where our clients connect: the warm path hands out
the port a client file names. So a client directory or file that is a symlink, belongs to another
user, or is writable by others is refused with one line naming the path and the fix.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import posix
from tests.conftest import cli

NOBODY = 65534
Run = Callable[..., subprocess.CompletedProcess[str]]


def refused(result: subprocess.CompletedProcess[str], path: Path, problem: str) -> bool:
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result.returncode == 1 and line.startswith(f"error: client {'file' if path.suffix else 'directory'} "
                                                       f"{path} {problem}") and "--connection-dir" in line


def planted_client_file(directory: Path, port: int = 22) -> Path:
    """What an attacker leaves: a client file pointing our clients at their port."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo-localhost.json"
    path.write_text(json.dumps({"hostname": "localhost", "port": port}))
    return path


def test_a_symlinked_client_directory_is_refused(rhl_dir: Path, tmp_path: Path,
                                                 config_file: Callable[..., Path]) -> None:
    elsewhere = tmp_path / "someone-elses"
    planted_client_file(elsewhere)
    rhl_dir.mkdir(parents=True)
    (rhl_dir / "client").symlink_to(elsewhere)
    result = cli(config_file(), "--json")
    assert refused(result, rhl_dir / "client", "is a symbolic link") and result.stdout == ""
    assert sorted(p.name for p in elsewhere.iterdir()) == ["demo-localhost.json"]  # nothing written there
    assert not (rhl_dir / "server").exists()  # nothing launched


def test_a_client_directory_of_another_user_is_refused_even_on_the_warm_path(
        rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    if posix.STRIPPED or posix.geteuid() != 0:
        pytest.skip("needs root, and user ids (not in the POSIX-stripped run)")
    client = rhl_dir / "client"
    planted_client_file(client)
    posix.chown(client, NOBODY, NOBODY)
    for command in ([], ["status"]):
        result = cli(*command, config_file())
        assert refused(result, client, f"belongs to another user (uid {NOBODY})"), result.stderr


def test_a_client_directory_others_may_write_is_refused(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    client = rhl_dir / "client"
    planted_client_file(client)
    client.chmod(0o777)
    result = cli(config_file())
    assert refused(result, client, "may be written by other users (mode 777)")


def test_a_symlinked_client_file_is_refused(rhl_dir: Path, tmp_path: Path, config_file: Callable[..., Path]) -> None:
    target = planted_client_file(tmp_path / "planted")
    client = rhl_dir / "client"
    client.mkdir(parents=True, mode=0o700)
    (client / "demo-localhost.json").symlink_to(target)
    result = cli(config_file())
    assert refused(result, client / "demo-localhost.json", "is a symbolic link")


def test_a_readable_client_directory_is_made_private(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    client = rhl_dir / "client"
    client.mkdir(parents=True)
    client.chmod(0o755)  # readable, not writable, by others: no way in, but private from now on
    assert cli(config_file()).returncode == 0
    assert client.stat().st_mode & 0o777 == 0o700


def test_a_state_directory_that_cannot_be_looked_at_is_one_line(tmp_path: Path,
                                                                config_file: Callable[..., Path]) -> None:
    """What a plain user meets in a directory it may not enter (as root: a path through a symlink loop)."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = cli(config_file(), "--connection-dir", str(loop / "client"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: client directory {loop / 'client'}: Too many levels of symbolic links; "
                             "use a directory of your own (--connection-dir or $REMOTE_HTTP_LAUNCHER_DIR)\n")
