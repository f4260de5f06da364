"""Local state another user could control is refused on every path, the warm one included.

Whoever controls the client directory controls where our clients connect: the warm path hands out
the port a client file names. So a client directory or file that is a symlink, belongs to another
user, or is writable by others is refused with one line naming the path and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from remote_http_launcher import LauncherError, run
from tests import posix
from tests.conftest import ROOT, cli

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


@pytest.mark.parametrize("problem", ["symlink", "writable"])
def test_every_path_refuses_an_untrusted_client_directory(problem: str, rhl_dir: Path, tmp_path: Path,
                                                          config_file: Callable[..., Path]) -> None:
    """The warm path (a served client file), `status`, `stop` and the API's run() alike."""
    config = config_file()
    assert cli(config).returncode == 0  # the service runs; its client file makes the next run a warm one
    client = rhl_dir / "client"
    if problem == "symlink":
        elsewhere = tmp_path / "elsewhere"
        client.rename(elsewhere)
        client.symlink_to(elsewhere)
        expected = "is a symbolic link"
    else:
        client.chmod(0o777)
        expected = "may be written by other users (mode 777)"
    for command in ([], ["status"], ["stop"]):
        assert refused(cli(*command, config), client, expected), command
    with pytest.raises(LauncherError) as info:
        run(str(config))
    assert str(info.value).startswith(f"client directory {client} {expected}, so another user could redirect")


def as_nobody(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python` (with this checkout and the test interpreter's packages) run by a plain user, uid 65534."""
    path = os.pathsep.join([str(ROOT), *(entry for entry in sys.path if entry and Path(entry).is_dir())])
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", python,
                           *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/",
                          env={**(env or {}), "PYTHONPATH": path, "PATH": os.environ["PATH"]})


def python_for_nobody() -> str | None:
    """An interpreter the plain user may run that imports the launcher (the test one may live in root's home)."""
    for python in (sys.executable, "/usr/bin/python3"):
        if as_nobody(python, "-c", "import remote_http_launcher.cli").returncode == 0:
            return python
    return None


def test_a_plain_user_gets_one_line_not_a_permission_error(config_file: Callable[..., Path]) -> None:
    """As a non-root user: a client directory inside another user's private directory, or a symlink to one."""
    if posix.STRIPPED or posix.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to become another user) and setpriv")
    python = python_for_nobody()
    if python is None:
        pytest.skip("no python that a plain user may run imports the launcher")
    mine = Path(tempfile.mkdtemp(prefix="rhl-nobody-"))  # outside pytest's root-only tmp directory
    try:
        config = mine / "service.yaml"
        config.write_text(config_file().read_text())
        private = mine / "roots"
        planted_client_file(private / "client")
        private.chmod(0o700)  # root's: the plain user may not look inside
        home = mine / "home"
        home.mkdir()
        (home / "client").symlink_to(private / "client")
        posix.chown(home, NOBODY, NOBODY)
        mine.chmod(0o755)
        env = {"HOME": str(home), "REMOTE_HTTP_LAUNCHER_DIR": str(home)}

        result = as_nobody(python, "-m", "remote_http_launcher", str(config), "--connection-dir",
                           str(private / "client"), env=env)
        assert result.returncode == 1 and "internal error" not in result.stderr, result.stderr
        assert result.stderr == (f"error: client directory {private / 'client'}: Permission denied; use a directory "
                                 "of your own (--connection-dir or $REMOTE_HTTP_LAUNCHER_DIR)\n")
        for command in ([], ["status"]):
            result = as_nobody(python, "-m", "remote_http_launcher", *command, str(config), env=env)
            assert refused(result, home / "client", "is a symbolic link"), result.stderr
            assert "internal error" not in result.stderr
        assert not (home / "server").exists()  # nothing launched
    finally:
        shutil.rmtree(mine)
