"""The original remote-http-launcher 0.4.5, from PyPI, on the SSH test server (a pytest plugin module).

The top-level conftest loads it (``pytest_plugins``). Fixture (session-scoped):

* ``original`` -- a venv in the home of the test server's account holding
  remote-http-launcher==0.4.5: its CLI and its server-side helpers (rhl-ps,
  rhl-logs, rhl-stop, rhl-launch-service, ...). It is built once per session
  with the python3 the account runs (Debian's): ``python3 -m venv
  --without-pip`` (so Debian's python3-venv is not needed), then this
  interpreter's pip installs into it (``pip --python``), as root in the
  host's network namespace (the server's namespace has no route to PyPI),
  and the tree is handed to the account. Without PyPI the tests fail, with a
  message that says so.

Helpers other modules share: ``pip_venv``/``pip_install`` (a venv with packages
from PyPI, failing with a message that says so without PyPI), ``give_tree``
(hand what root installed to the account) and ``install_stand_in_conda`` (a
conda for the account, found as launchers find it, whose environments may be
venvs).

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
from collections.abc import Iterator, Sequence
from pathlib import Path
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


def pip_venv(python: str, venv: str | Path, requirements: Sequence[str], purpose: str,
             timeout: float = INSTALL_TIMEOUT) -> None:
    """A venv at `venv` for `python` (``--without-pip``: Debian's python3-venv is not needed) with
    `requirements` installed (pip_install)."""
    _pip_step([python, "-m", "venv", "--clear", "--without-pip", str(venv)], requirements, purpose, timeout)
    pip_install(venv, requirements, purpose, timeout)


def pip_install(venv: str | Path, requirements: Sequence[str], purpose: str, timeout: float = INSTALL_TIMEOUT) -> None:
    """Install `requirements` into `venv` with this interpreter's pip (``pip --python``), from PyPI, in this
    network namespace. Without PyPI the test fails with a message that says so."""
    _pip_step([sys.executable, "-m", "pip", "--python", f"{venv}/bin/python", "install", "--quiet",
               "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20", *requirements],
              requirements, purpose, timeout)


def _pip_step(argv: list[str], requirements: Sequence[str], purpose: str, timeout: float) -> None:
    what = " ".join(requirements)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=unstripped_env())  # pip: a whole POSIX Python
    except subprocess.TimeoutExpired:
        pytest.fail(f"installing {what} from PyPI for {purpose} timed out after {timeout} s: "
                    f"{shlex.join(argv)} (is PyPI reachable?)", pytrace=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        pytest.fail(f"cannot install {what} for {purpose} (they need PyPI): "
                    f"{shlex.join(argv)} exited with {done.returncode}:\n{tail}", pytrace=False)


#: Where venvs that take minutes to install (JupyterLab...) are kept between test runs, one per requirement set.
VENV_CACHE = Path(os.environ.get("RHL_TEST_VENV_CACHE", "/var/cache/remote-http-launcher-tests"))
CACHED_INSTALL_TIMEOUT = 900


def cached_venv(python: str, requirements: Sequence[str], purpose: str) -> Path:
    """A venv of `python` with `requirements`, made once and kept under VENV_CACHE, named by a digest of both
    (pinned versions: a new pin makes a new venv). Readable by every user (the test servers' accounts run
    it), written by no one else; concurrent test runs wait for the one that builds it (a lock file)."""
    import fcntl
    import hashlib

    digest = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()[:16]
    venv = VENV_CACHE / f"venv-{digest}"
    done = venv / ".complete"
    if done.exists():
        return venv
    VENV_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(VENV_CACHE / f"venv-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            old_umask = os.umask(0o022)
            try:
                pip_venv(python, venv, requirements, purpose, timeout=CACHED_INSTALL_TIMEOUT)
            finally:
                os.umask(old_umask)
            done.write_text("\n".join(requirements) + "\n")
    return venv


def give_tree(server: SSHServer, path: str) -> None:
    """Hand the tree at `path` (built as root: what pip installed for it) to the server's account."""
    account = pwd.getpwnam(server.user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            lchown(os.path.join(root, name), account.pw_uid, account.pw_gid)
    lchown(path, account.pw_uid, account.pw_gid)


def _install(server: SSHServer) -> Original:
    venv = f"{server.home}/{VENV}"
    tools_yaml = f"{venv}/rhl-tools.yaml"
    pip_venv(server.python, venv, [REQUIREMENT], "the interop tests")
    # The original launches only whitelisted programs: the first word of each command_template.
    with open(tools_yaml, "w", encoding="utf-8") as handle:
        json.dump({"demo": {"command_template": f"{server.python} {{demo}} --status-file {{status_file}}"}}, handle)
    give_tree(server, venv)
    original = Original(server, venv, tools_yaml)
    version = original.run("python", "-c", "import importlib.metadata as m; print(m.version('remote-http-launcher'))")
    assert (version.returncode, version.stdout.strip()) == (0, REQUIREMENT.split("==")[1]), version
    return original


CONDA_BASE = "miniconda3"  # the stand-in conda's base, in the account's home


def install_stand_in_conda(server: SSHServer, envs: dict[str, str | None]) -> str:
    """On the server: a stand-in conda whose conda.sh is found through ~/.bashrc's `conda initialize` block
    (as both launchers look for it), with environments by name: each a directory of its own holding a
    python3, or a link to the prefix given (a venv: its bin comes first on PATH once activated). Its base."""
    base = f"{server.home}/{CONDA_BASE}"
    conda_sh = f"""conda() {{
  case "$1" in
    activate) CONDA_PREFIX={base}/envs/$2 CONDA_DEFAULT_ENV=$2 PATH={base}/envs/$2/bin:$PATH
              export CONDA_PREFIX CONDA_DEFAULT_ENV PATH ;;
    info) echo {base} ;;
    env) echo {shlex.quote(json.dumps({"envs": [base, *(f"{base}/envs/{name}" for name in envs)]}))} ;;
  esac
}}
"""
    lines = [f"set -e\nmkdir -p {base}/etc/profile.d {base}/envs",
             f"cat > {base}/etc/profile.d/conda.sh <<'EOF_CONDA'\n{conda_sh}EOF_CONDA",
             f"printf '# >>> conda initialize >>>\\n. \"{base}/etc/profile.d/conda.sh\"\\n"
             f"# <<< conda initialize <<<\\n' > {server.home}/.bashrc"]
    for name, prefix in envs.items():
        env = f"{base}/envs/{name}"
        if prefix is None:
            lines.append(f"mkdir -p {env}/conda-meta {env}/bin && ln -sf {server.python} {env}/bin/python3")
        else:
            lines.append(f"mkdir -p {shlex.quote(prefix)}/conda-meta && ln -sfn {shlex.quote(prefix)} {env}")
    result = server.run("\n".join(lines))
    assert result.returncode == 0, result.stderr
    return base


def remove_stand_in_conda(server: SSHServer) -> None:
    """Remove what install_stand_in_conda made (a linked prefix stays)."""
    server.run(f"rm -rf {server.home}/{CONDA_BASE} {server.home}/.bashrc")


@pytest.fixture(scope="session")
def original(sshd: SSHServer) -> Iterator[Original]:
    """remote-http-launcher 0.4.5 in a venv of the test server's account (built once per session)."""
    installed = _install(sshd)
    yield installed
    sshd.run(f"rm -rf {shlex.quote(installed.venv)}")
