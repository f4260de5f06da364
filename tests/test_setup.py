"""`setup:` lines run before the command, in order, on this machine and over SSH (real processes, the
test sshd); a failing line ends the launch with that line named. In a SLURM job: tests/test_slurm.py."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.ssh_client import ALIAS

from .conftest import cli

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.remote import RemoteConfig
    from tests.sshd import SSHServer

# Line 2 reads what line 1 exported (one shell, in order), line 3 uses bash's `source` (sh has only `.`);
# the service must see what they exported.
SETUP = ["export RHL_GREETING='hello world'", 'echo "$RHL_GREETING" > setup-ran', "source ./activate.sh"]
ACTIVATE = "export RHL_SOURCED=yes\n"
FAILING = ["export RHL_A=1", "rhl-no-such-command --flag", "touch setup-went-on"]
FAILED = "failed (status 127): rhl-no-such-command --flag"


def environment(text: bytes) -> dict[str, str]:
    """A process's environment as /proc/PID/environ holds it."""
    return dict(item.split("=", 1) for item in text.decode().split("\0") if "=" in item)


def error_line(stderr: str) -> str:
    """The one error line among the progress lines."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def up(config: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    return cli(path, "--json", timeout=120)


def test_setup_lines_run_in_order_before_the_command_and_compose_with_conda(
        rhl_dir: Path, demo_config: Callable[..., dict[str, Any]], tmp_path: Path,
        monkeypatch: Any) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    (workdir / "activate.sh").write_text(ACTIVATE)
    base = tmp_path / "conda"  # a stand-in conda: its `activate` exports which environment it activated
    (base / "etc" / "profile.d").mkdir(parents=True)
    (base / "etc" / "profile.d" / "conda.sh").write_text(
        'conda() { CONDA_DEFAULT_ENV=$2 RHL_GREETING_AT_ACTIVATION=$RHL_GREETING; '
        'export CONDA_DEFAULT_ENV RHL_GREETING_AT_ACTIVATION; }\n')
    (base / "envs" / "present" / "conda-meta").mkdir(parents=True)
    monkeypatch.setenv("CONDA_EXE", str(base / "bin" / "conda"))

    result = up(demo_config(setup=SETUP, conda="present"), tmp_path)

    assert result.returncode == 0, result.stderr
    assert (workdir / "setup-ran").read_text() == "hello world\n"
    record = json.loads((rhl_dir / "server" / "demo-localhost.json").read_text())
    env = environment(Path(f"/proc/{record['pid']}/environ").read_bytes())
    assert env["RHL_GREETING"] == "hello world"
    assert env["RHL_SOURCED"] == "yes"
    # the setup lines ran first, then conda's activation
    assert env["CONDA_DEFAULT_ENV"] == "present"
    assert env["RHL_GREETING_AT_ACTIVATION"] == "hello world"


def test_a_failing_setup_line_stops_there_and_is_named_in_the_one_line_error(
        rhl_dir: Path, demo_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    result = up(demo_config(setup=FAILING), tmp_path)

    assert result.returncode == 1
    error = error_line(result.stderr)
    assert error.startswith(f"error: demo-localhost: setup line 2 on localhost {FAILED}; service on localhost "
                            "exited before reporting its port; ")
    assert "rhl-no-such-command: not found" in result.stderr  # the log's tail: the shell's own message
    assert not (tmp_path / "work dir" / "setup-went-on").exists()


def test_setup_lines_run_on_the_ssh_host(keyed_server: SSHServer, remote_config: RemoteConfig,
                                         tmp_path: Path) -> None:
    config = remote_config(keyed_server)
    workdir = config["workdir"].replace("~", str(keyed_server.home), 1)
    keyed_server.run(f"mkdir -p {shlex.quote(workdir)} && printf %s {shlex.quote(ACTIVATE)} > "
                     f"{shlex.quote(workdir)}/activate.sh", check=True)

    result = up({**config, "setup": SETUP}, tmp_path)

    assert result.returncode == 0, result.stderr
    key = config["key"]
    record = json.loads(keyed_server.run(f"cat ~/.remote-http-launcher/server/{key}.json", check=True).stdout)
    env = environment(keyed_server.run(f"cat /proc/{record['pid']}/environ", check=True).stdout.encode())
    assert env["RHL_GREETING"] == "hello world"
    assert env["RHL_SOURCED"] == "yes"
    assert keyed_server.run(f"cat {shlex.quote(workdir)}/setup-ran", check=True).stdout == "hello world\n"


def test_a_failing_setup_line_over_ssh_is_named(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                tmp_path: Path) -> None:
    config = remote_config(keyed_server)

    result = up({**config, "setup": FAILING}, tmp_path)

    assert result.returncode == 1
    error = error_line(result.stderr)
    assert f": setup line 2 on {ALIAS} {FAILED}; service on {ALIAS} exited" in error
    assert "rhl-no-such-command: not found" in result.stderr  # the log's tail
    workdir = config["workdir"].replace("~", str(keyed_server.home), 1)
    assert keyed_server.run(f"test -e {shlex.quote(workdir)}/setup-went-on").returncode == 1
