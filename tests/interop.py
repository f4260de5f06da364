"""The original remote-http-launcher 0.4.5, from PyPI, on the SSH test server (a pytest plugin module).

Use it with ``pytest_plugins = ["tests.interop"]``. Fixture (session-scoped):

* ``original`` -- a venv in the home of the test server's account holding
  remote-http-launcher==0.4.5: its CLI and its server-side helpers (rhl-ps,
  rhl-logs, rhl-stop, rhl-launch-service, ...). It is built once per session
  with the python3 the account runs (Debian's): ``python3 -m venv
  --without-pip`` (so Debian's python3-venv is not needed), then this
  interpreter's pip installs into it (``pip --python``), as root in the
  host's network namespace (the server's namespace has no route to PyPI),
  and the tree is handed to the account. Without PyPI the tests fail, with a
  message that says so.

The original runs on the server as the account, over SSH (``Original.run``):
in local mode (a config without ``hostname``) it is the launcher of that host,
and its helpers read the same ``~/.remote-http-launcher/server`` as ours.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from tests.posix import lchown, pwd, unstripped_env  # also in the POSIX-stripped run

if TYPE_CHECKING:
    from tests.sshd import SSHServer

REQUIREMENT = "remote-http-launcher==0.4.5"
VENV = "rhl045-venv"  # in the account's home; other modules' cleanups leave it alone
INSTALL_TIMEOUT = 240


def ssh_exec(server: SSHServer, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a shell command line as the server's account over a real SSH exec channel."""
    client = server.connect()
    try:
        stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        stdin.close()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return subprocess.CompletedProcess(command, stdout.channel.recv_exit_status(), out, err)
    finally:
        client.close()


class Original(NamedTuple):
    """remote-http-launcher 0.4.5 installed for the server's account."""

    server: SSHServer
    venv: str  # absolute, on the server
    tools_yaml: str  # its service whitelist (RHL_TOOLS_YAML): the demo service's python may be launched

    def command(self, *argv: str) -> str:
        """argv as a command line for the account: the venv's bin first on PATH (the original runs its
        helpers by name), the whitelist set, in the home directory, stdin from /dev/null."""
        return (f"cd && PATH={shlex.quote(self.venv)}/bin:$PATH RHL_TOOLS_YAML={shlex.quote(self.tools_yaml)} "
                f"{shlex.join(argv)} </dev/null")

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A program of the original (`remote-http-launcher`, `rhl-ps`, ...) run on the server over SSH."""
        return ssh_exec(self.server, self.command(*argv), timeout)

    def ps(self) -> dict[str, dict[str, Any]]:
        """`rhl-ps --json` (one JSON row per status file), by key."""
        result = self.run("rhl-ps", "--json")
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        return {row["key"]: row for row in rows}

    def write(self, path: str, text: str) -> str:
        """Write a file on the server as the account (over SFTP); `path` is relative to its home."""
        client = self.server.connect()
        try:
            sftp = client.open_sftp()
            directory = os.path.dirname(path)
            if directory:
                try:
                    sftp.mkdir(directory, 0o700)
                except OSError:
                    pass  # it exists
            with sftp.open(path, "w") as handle:
                handle.write(text)
        finally:
            client.close()
        return f"{self.server.home}/{path}"

    def launch(self, config: dict[str, Any], *extra: str,
               name: str = "rhl-interop/original.yaml") -> subprocess.CompletedProcess[str]:
        """The original's CLI on the server with `config` (JSON is YAML): local mode when it has no hostname."""
        return self.run("remote-http-launcher", self.write(name, json.dumps(config)), *extra)


def _install(server: SSHServer) -> Original:
    account = pwd.getpwnam(server.user)
    venv = f"{server.home}/{VENV}"
    tools_yaml = f"{venv}/rhl-tools.yaml"
    python = f"{venv}/bin/python"
    steps = [
        [server.python, "-m", "venv", "--clear", "--without-pip", venv],
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--disable-pip-version-check",
         "--no-input", "--retries", "1", "--timeout", "20", REQUIREMENT],
    ]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                  stdin=subprocess.DEVNULL, env=unstripped_env())  # pip: a whole POSIX Python
        except subprocess.TimeoutExpired:
            pytest.fail(f"installing {REQUIREMENT} from PyPI for the interop tests timed out after "
                        f"{INSTALL_TIMEOUT} s: {shlex.join(argv)} (is PyPI reachable?)", pytrace=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            pytest.fail(f"cannot install {REQUIREMENT} for the interop tests (they need PyPI): "
                        f"{shlex.join(argv)} exited with {done.returncode}:\n{tail}", pytrace=False)
    # The original launches only whitelisted programs: the first word of each command_template.
    with open(tools_yaml, "w", encoding="utf-8") as handle:
        json.dump({"demo": {"command_template": f"{server.python} {{demo}} --status-file {{status_file}}"}}, handle)
    for root, dirs, files in os.walk(venv):
        for name in [*dirs, *files]:
            lchown(os.path.join(root, name), account.pw_uid, account.pw_gid)
    lchown(venv, account.pw_uid, account.pw_gid)
    original = Original(server, venv, tools_yaml)
    version = original.run("python", "-c", "import importlib.metadata as m; print(m.version('remote-http-launcher'))")
    assert (version.returncode, version.stdout.strip()) == (0, REQUIREMENT.split("==")[1]), version
    return original


@pytest.fixture(scope="session")
def original(sshd: SSHServer) -> Iterator[Original]:
    """remote-http-launcher 0.4.5 in a venv of the test server's account (built once per session)."""
    installed = _install(sshd)
    yield installed
    sshd.run(f"rm -rf {shlex.quote(installed.venv)}")
