"""State interop with the original remote-http-launcher 0.4.5, both ways, against the real package from PyPI.

Ours -> the original: our status files pass its checks (its CLI reuses our
services), and its server-side helpers (rhl-ps, rhl-inspect, rhl-logs,
rhl-stop) list, read and stop services we launched. rhl-stop signals the
recorded PID only, so that PID must be the service itself: the launch script
execs a simple command instead of running it under `sh -c`
(scripts.exec_plan), and starts it with SIGINT (rhl-stop's first signal) at
its default.

The original -> ours: services its CLI (or its rhl-launch-service) started
are reused, `starting` ones waited for, and `list` shows them; its `stale`
marks (rhl-stop) and --dry-run records are understood.

The original runs on the SSH test server as the account, over SSH, in local
mode (tests/interop.py installs it there once per session). Each test cleans
the server's services and state afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from remote_http_launcher import run, scripts, status, stop
from remote_http_launcher.commands.listing import list_services
from remote_http_launcher.hosts import LocalHost
from remote_http_launcher.render import format_list
from tests.conftest import DEMO_SERVICE, alive, cli
from tests.interop import install_stand_in_conda, pip_venv, remove_stand_in_conda
from tests.posix import SIGKILL, killpg
from tests.ssh_client import ALIAS, REMOTE_STATE, node_key, remote_state, stop_services_script
from tests.ssh_client import demo_config as ssh_demo_config

if TYPE_CHECKING:
    from tests.interop import Original
    from tests.sshd import SSHServer


CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work" "$HOME/rhl-interop"')
Factory = Callable[..., dict[str, Any]]


# ---------------------------------------------------------------- helpers

def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return [part.decode() for part in handle.read().split(b"\0") if part]


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (e.g. a status file: any orphan of a service)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker in " ".join(cmdline(int(entry))) and alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def remote_text(server: SSHServer, path: str) -> str:
    return server.run(f"cat {path}").stdout


def starts_in_log(server: SSHServer, key: str) -> int:
    return remote_text(server, f"{REMOTE_STATE}/{key}.log").count("demo service starting")


def list_json(host: str) -> dict[str, dict[str, Any]]:
    """`list --host HOST --json` (the CLI in a subprocess), services by key."""
    result = cli("list", "--host", host, "--json")
    assert result.returncode == 0, result.stderr
    return {entry["key"]: entry for entry in json.loads(result.stdout)["services"]}


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    """The target server, cleaned (services killed, state removed) after the test."""
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return node_key("i-", request.node.name)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, key: str) -> Factory:
    """Our configs of the demo service on the server (direct mode, interface 0.0.0.0)."""
    return partial(ssh_demo_config, server, remote_demo, key)


@pytest.fixture
def original_config(server: SSHServer, remote_demo: str, key: str) -> Factory:
    """The same service for the original's CLI run on the server: local mode (no hostname), same key."""

    def make(*, args: str = "") -> dict[str, Any]:
        return {
            "workdir": "~/rhl-work",
            "key": key,
            "command": f"{server.python} {remote_demo} --status-file {{status_file}} "
                       f"--host {{network_interface}} {args}".strip(),
            "network_interface": "0.0.0.0",
            "handshake": "healthcheck",
        }

    return make


@pytest.fixture
def ssh_env(ssh_config: Path, rhl_dir: Path) -> None:
    """A client HOME whose ~/.ssh/config names the server (ALIAS), and our own state directory."""


# ---------------------------------------------------------------- which commands are exec'ed

@pytest.mark.parametrize("command", [
    "python3 serve.py --port-range 1 2",
    "/opt/svc/bin/svc --x",
    "~/bin/svc",
    '"$HOME/my app/bin/svc" --dir "a b"',
    "${HOME}/svc",
    "A=1 B='x y' C=\"$HOME\" python3 serve.py",
    "python3 serve.py 'a;b' \"c|d\" e\\&f ${PORT:-8000} $HOME  # a comment",
    "env CUDA_VISIBLE_DEVICES=0 python3 serve.py",
])
def test_simple_commands_are_execed(command: str) -> None:
    plan = scripts.exec_plan(command)
    assert plan is not None
    first, text = plan
    assert text.replace("exec ", "", 1) == command
    assert text.index("exec ") == command.index(first)


@pytest.mark.parametrize("command", [
    "cd work && python3 serve.py", "a; b", "a || b", "a | b", "a & ", "(a)", "{ a; }", "python3 x > log",
    "python3 x 2>&1", "python3 < in", "python3 $(cat args)", "python3 `cat args`", 'python3 "$(x)"',
    "python3 $((1 + 2))", "! python3 x", "if true; then a; fi", "exec python3 x", "time python3 x",
    "$1 x", "$$ x", "$@", "*.py", "svc${X:-a b}", "${X:-svc} x", "python3 'unterminated", 'python3 "open',
    "python3 x \\", "A=1", "", "   ", "# only a comment", "a\nb",
])
def test_other_commands_keep_the_wrapper(command: str) -> None:
    assert scripts.exec_plan(command) is None


PRINTER = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), "cwd": os.getcwd(),
                  "env": {k: os.environ.get(k) for k in ("FOO", "BAR", "RHL_T")}}))
"""


def through_prelude(tmp_path: Path, command: str, *, execed: bool) -> tuple[int, dict[str, Any]]:
    """Run `command` through the service prelude (exec plan or `sh -c`): (recorded PID, what it printed)."""
    status = tmp_path / "s.json"
    plan = (scripts.exec_plan(command) or ("", "")) if execed else ("", "")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RHL_T": "from env", "LANG": "C.UTF-8"}
    done = subprocess.run(["sh", "-c", scripts.program("service"), "rhl-service", str(status), command, "", "", "022",
                           "", "", *plan], input='{"status": "starting", \n', capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(status.read_text())["pid"], json.loads(done.stdout)


@pytest.mark.parametrize("words", [
    "a 'b  c' \"d e\" $HOME \"$HOME/x\" ~/y ${HOME} '$HOME' a\\ b \"\" x=1 *.nomatch -- --z",
    "${NOPE:-default} ${HOME:+set} \"${RHL_T}\" $RHL_T",
    "# a comment",
])
@pytest.mark.parametrize("prefix", ["", "FOO=1 BAR='two words' ", "env FOO=2 "])
def test_execed_command_runs_like_sh_c(tmp_path: Path, prefix: str, words: str) -> None:
    """The exec plan gives the program the argv, environment and cwd `sh -c` would, in the recorded PID."""
    (tmp_path / "printer.py").write_text(PRINTER)
    command = f"{prefix}{sys.executable} printer.py {words}"
    assert scripts.exec_plan(command) is not None
    pid, execed = through_prelude(tmp_path, command, execed=True)
    _, wrapped = through_prelude(tmp_path, command, execed=False)
    assert execed["pid"] == pid  # the recorded process is the program itself
    assert {**execed, "pid": None} == {**wrapped, "pid": None}


def test_builtin_or_missing_command_name_falls_back_to_sh_c(tmp_path: Path) -> None:
    """A name that is no file (a builtin such as `command`, or not found) runs under `sh -c` as before."""
    (tmp_path / "printer.py").write_text(PRINTER)
    command = f"command {sys.executable} printer.py a"
    assert scripts.exec_plan(command) is not None  # the scanner cannot know; the prelude checks
    assert through_prelude(tmp_path, command, execed=True)[1]["argv"] == ["a"]
    status = tmp_path / "s.json"
    missing = subprocess.run(["sh", "-c", scripts.program("service"), "rhl-service", str(status), "no-such-svc x",
                              "", "", "022", "", "", *(scripts.exec_plan("no-such-svc x") or ())],
                             input="{\n", capture_output=True, text=True, timeout=30)
    assert missing.returncode == 127
    assert "not found" in missing.stdout + missing.stderr


# ---------------------------------------------------------------- local services: the recorded PID

def test_local_service_is_the_recorded_process_with_default_sigint(rhl_dir: Path,
                                                                    demo_config: Factory) -> None:
    run(demo_config())
    record = json.loads((rhl_dir / "server" / "demo-localhost.json").read_text())
    pid = record["pid"]
    assert cmdline(pid)[:2] == [sys.executable, str(DEMO_SERVICE)]
    assert os.getsid(pid) == pid  # still the leader of its own session
    os.kill(pid, signal.SIGINT)  # what the original's rhl-stop sends first
    wait_gone(pid, 5)
    assert "KeyboardInterrupt" in (rhl_dir / "server" / "demo-localhost.log").read_text()


def test_local_compound_command_keeps_the_wrapper_and_stops_whole(rhl_dir: Path, demo_config: Factory,
                                                                  tmp_path: Path) -> None:
    config = demo_config(command=f"cd {tmp_path} && {sys.executable} {DEMO_SERVICE} --status-file {{status_file}}")
    run(config)
    status_file = str(rhl_dir / "server" / "demo-localhost.json")
    pid = json.loads(Path(status_file).read_text())["pid"]
    assert os.path.basename(cmdline(pid)[0]) in ("sh", "dash")  # `sh -c` runs the list; its group holds both
    service = [p for p in processes_mentioning(status_file) if cmdline(p)[0] == sys.executable]
    assert len(service) == 1 and os.getpgid(service[0]) == pid

    assert stop(config)["processes"] == [{"pid": pid, "signal": "TERM"}]
    wait_gone(service[0], 5)
    assert processes_mentioning(status_file) == []


# ---------------------------------------------------------------- local: the original's marks

def test_stale_mark_and_dry_run_record_of_the_original(rhl_dir: Path, demo_config: Factory) -> None:
    """`status: stale` (rhl-stop) and a --dry-run record are stale; a stale mark's PID is never signalled."""
    server_dir = rhl_dir / "server"
    server_dir.mkdir(parents=True, mode=0o700)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        config = demo_config()
        status_file = server_dir / "demo-localhost.json"
        # as rhl-stop leaves it: the original's fields (no start time), status "stale"; the PID is in use again
        status_file.write_text(json.dumps({"workdir": config["workdir"], "log": str(server_dir / "x.log"),
                                           "command": "svc", "uid": os.getuid(), "pid": bystander.pid,
                                           "status": "stale", "network_interface": "localhost", "port": 1234}))
        entry = status(config)
        assert (entry["status"], entry["detail"], entry["pid"]) == ("stale", "stopped (marked stale by rhl-stop)",
                                                                   bystander.pid)
        assert format_list("localhost", list_services(LocalHost())).splitlines()[1].split()[:2] == \
            ["demo-localhost", "stale"]
        outcome = stop(config)
        assert outcome["processes"] == [] and outcome["removed"] == ["status file"]
        assert bystander.poll() is None  # left alone

        # the original's --dry-run writes a record without status or PID
        status_file.write_text(json.dumps({"workdir": config["workdir"], "log": str(server_dir / "x.log"),
                                           "command": "svc", "network_interface": "localhost", "parameters": None,
                                           "dry_run": True}))
        entry = status(config)
        assert (entry["status"], entry["detail"]) == ("stale", "a record of the original's --dry-run; nothing was "
                                                               "launched")
        payload = run(config)  # launched over it
        assert json.loads(status_file.read_text())["port"] == payload["port"]
    finally:
        bystander.kill()
        bystander.wait()


# ---------------------------------------------------------------- SSH: the original's helpers on our services

def test_original_helpers_list_read_and_stop_our_service(original: Original, server: SSHServer, key: str,
                                                         remote_demo: str, make_config: Factory,
                                                         ssh_env: None) -> None:
    config = make_config()
    payload = run(config)
    record = remote_state(server, key)
    assert record is not None
    pid, port = record["pid"], record["port"]
    assert payload["port"] == port
    assert cmdline(pid)[:2] == [server.python, remote_demo]  # the service, not a shell

    row = original.ps()[key]
    assert (row["status"], row["live"], row["pid"], row["port"]) == ("running", True, pid, port)
    inspected = original.run("rhl-inspect", key)
    assert json.loads(inspected.stdout) == record, inspected.stderr
    logs = original.run("rhl-logs", key)
    assert logs.returncode == 0 and f"demo service listening on 0.0.0.0:{port}" in logs.stdout, logs.stderr

    stopped = original.run("rhl-stop", key)
    assert (stopped.returncode, stopped.stdout.strip()) == (0, f"{key}: stopped"), stopped.stderr
    assert not alive(pid)
    assert "KeyboardInterrupt" in remote_text(server, f"{REMOTE_STATE}/{key}.log")  # its SIGINT did it
    assert processes_mentioning(f"{REMOTE_STATE}/{key}.json") == []  # no orphan
    assert not port_open(server.host, port)

    # rhl-stop keeps the file, marked stale; ours reads that, and relaunches over it
    assert original.ps()[key]["status"] == "stale"
    entry = status(config)
    assert (entry["status"], entry["detail"]) == ("stale", "stopped (marked stale by rhl-stop)")
    assert list_json(ALIAS)[key]["status"] == "stale"
    again = run(config)
    record = remote_state(server, key)
    assert record is not None and record["pid"] != pid and record["port"] == again["port"]
    assert original.ps()[key]["status"] == "running"


def test_original_reuses_our_service(original: Original, server: SSHServer, key: str, make_config: Factory,
                                     original_config: Factory, ssh_env: None) -> None:
    """Our status file passes the original's checks: its CLI on the server reuses the service we launched."""
    run(make_config(file_parameters={"p": [1, 2]}))
    record = remote_state(server, key)
    assert record is not None

    done = original.launch(original_config())

    assert done.returncode == 0, done.stderr
    assert "done: reused-remote" in done.stderr
    assert remote_state(server, key) == record
    assert starts_in_log(server, key) == 1
    client = json.loads(remote_text(server, f".remote-http-launcher/client/{key}.json"))
    assert (client["port"], client["parameters"]) == (record["port"], {"p": [1, 2]})


def test_compound_command_stopped_by_us_leaves_no_orphan(server: SSHServer, key: str, remote_demo: str,
                                                         make_config: Factory, ssh_env: None) -> None:
    """Where the command cannot be exec'ed, the wrapper stays, and our stop takes its whole process group."""
    config = make_config(command=f"cd ~ && {server.python} {remote_demo} --status-file {{status_file}} "
                                 "--host {network_interface}")
    payload = run(config)
    record = remote_state(server, key)
    assert record is not None
    assert os.path.basename(cmdline(record["pid"])[0]) in ("sh", "dash")
    marker = f"{REMOTE_STATE}/{key}.json"
    assert len(processes_mentioning(marker)) == 2  # the shell and the service

    assert stop(config)["processes"] == [{"pid": record["pid"], "signal": "TERM"}]
    deadline = time.monotonic() + 5
    while processes_mentioning(marker):
        assert time.monotonic() < deadline, processes_mentioning(marker)
        time.sleep(0.05)
    assert not port_open(server.host, payload["port"])


# ---------------------------------------------------------------- SSH: services the original launched

def test_we_reuse_and_list_and_stop_a_service_the_original_launched(
        original: Original, server: SSHServer, key: str, make_config: Factory, original_config: Factory,
        ssh_env: None) -> None:
    launched = original.launch(original_config())
    assert launched.returncode == 0, launched.stderr
    assert "done: launched" in launched.stderr
    record = remote_state(server, key)
    assert record is not None and record["status"] == "running" and "start_time" not in record
    pid, port = record["pid"], record["port"]

    payload = run(make_config())

    assert (payload["hostname"], payload["port"]) == (server.host, port)
    assert remote_state(server, key) == record  # reused as it is: nothing relaunched or rewritten
    assert starts_in_log(server, key) == 1
    entry = list_json(ALIAS)[key]
    assert (entry["status"], entry["pid"], entry["port"]) == ("running", pid, port)
    listing = cli("list", "--host", ALIAS)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[:4] for line in listing.stdout.splitlines() if line.startswith(key)] == \
        [[key, "running", str(pid), str(port)]]

    outcome = stop(make_config())
    assert outcome["processes"] == [{"pid": pid, "signal": "TERM"}]
    assert not alive(pid) and not port_open(server.host, port)
    assert key not in original.ps()


def test_we_wait_for_a_service_the_original_is_starting(original: Original, server: SSHServer, key: str,
                                                        remote_demo: str, make_config: Factory,
                                                        ssh_env: None) -> None:
    started = original.run("rhl-launch-service", "--key", key, "--workdir", "~/rhl-work", "--network-interface",
                           "0.0.0.0", "--", server.python, remote_demo, "--status-file",
                           f"~/{REMOTE_STATE}/{key}.json", "--host", "0.0.0.0", "--ready-delay", "1.5")
    assert started.returncode == 0, started.stderr
    record = remote_state(server, key)
    assert record is not None and record["status"] == "starting"

    payload = run(make_config())

    record = remote_state(server, key)
    assert record is not None and record["status"] == "running"
    assert payload["port"] == record["port"] and alive(record["pid"])
    assert starts_in_log(server, key) == 1


def test_dry_run_record_of_the_original_is_listed_and_launched_over(original: Original, server: SSHServer,
                                                                   key: str, make_config: Factory,
                                                                   original_config: Factory,
                                                                   ssh_env: None) -> None:
    dry = original.launch(original_config(), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(remote_text(server, f"{REMOTE_STATE}/{key}.json"))["dry_run"] is True
    entry = list_json(ALIAS)[key]
    assert (entry["status"], entry["detail"]) == ("stale", "a record of the original's --dry-run; nothing was "
                                                           "launched")

    payload = run(make_config())

    record = remote_state(server, key)
    assert record is not None and record["port"] == payload["port"] and "dry_run" not in record
    assert original.ps()[key]["status"] == "running"


# ---------------------------------------------------------------- SSH: the original as the client, over SSH
#
# Users of the original ran it on their laptop against the server: it logs in with the `ssh` binary and the
# remote login shell expands the command it launches (`~` in `{status_file}`, quotes, a conda prefix, a
# compound command), so the process's arguments are not the recorded text. Both versions, both ways, each of
# those forms: the same PID is reused and one process of the key runs afterwards.

ORIGINAL_VERSIONS = ("0.2.0", "0.4.5")
CONDA_ENV = "rhlenv"
SHEBANG_SERVICE = "bin/hashserver"  # a service started by name with a `#!` line: /proc shows its interpreter
#: The forms of command users of the original write (each a template for both launchers).
FORMS = {
    "tilde": "{python} {demo} --status-file {{status_file}} --host {{network_interface}}",
    "quoted": "{python} '{demo}' --status-file {{status_file}} --host '{{network_interface}}' "
              "--label '{{workdir}}'",
    "compound": "cd {{workdir}} && exec {python} {demo} --status-file {{status_file}} "
                "--host {{network_interface}}",
    "conda": "python3 {demo} --status-file {{status_file}} --host {{network_interface}}",
    "hashserver": "{home}/" + SHEBANG_SERVICE + " --status-file {{status_file}} --host {{network_interface}}",
}
#: 0.4.5 launches argv without a shell (shlex.split, then its whitelist): a compound command is not its to run.
UNLAUNCHABLE = {("0.4.5", "compound")}


class OriginalClient(NamedTuple):
    """The original's CLI on this machine, logging in to the test server with the `ssh` binary."""

    version: str
    venv: Path
    home: Path  # its HOME (client files)
    bin_dir: Path  # an `ssh` that reads the test's ~/.ssh/config (OpenSSH reads root's home, not $HOME)

    def launch(self, config: dict[str, Any], ssh_config: Path, tools: Path) -> subprocess.CompletedProcess[str]:
        path = self.home / f"{config['key']}.yaml"
        path.write_text(json.dumps(config))
        env = {**os.environ, "HOME": str(self.home), "PATH": f"{self.bin_dir}:{self.venv}/bin:{os.environ['PATH']}",
               "RHL_TEST_SSH_CONFIG": str(ssh_config), "RHL_TOOLS_YAML": str(tools)}
        env.pop("REMOTE_HTTP_LAUNCHER_DIR", None)
        return subprocess.run([str(self.venv / "bin" / "remote-http-launcher"), str(path)], capture_output=True,
                              text=True, timeout=180, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="session")
def original_clients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OriginalClient]:
    """0.2.0 and 0.4.5 from PyPI, each in a venv of this machine (built once per session)."""
    if shutil.which("ssh") is None:
        pytest.fail("the original's client needs the ssh binary (Debian's openssh-client)", pytrace=False)
    root = tmp_path_factory.mktemp("originals")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F "$RHL_TEST_SSH_CONFIG" "$@"\n')
    wrapper.chmod(0o755)
    clients = {}
    for version in ORIGINAL_VERSIONS:
        venv = root / f"rhl-{version}"
        pip_venv(sys.executable, venv, [f"remote-http-launcher=={version}"], "the interop tests")
        home = root / f"home-{version}"
        home.mkdir()
        clients[version] = OriginalClient(version, venv, home, bin_dir)
    return clients


@pytest.fixture
def server_setup(server: SSHServer, remote_demo: str) -> Iterator[dict[str, str]]:
    """On the server: a stand-in conda with one environment (tests/interop.py) and a `#!` service; the
    template values for FORMS."""
    home = server.home
    install_stand_in_conda(server, {CONDA_ENV: None})
    script = f"""set -e
mkdir -p {home}/bin
{{ echo '#!{server.python}'; cat {remote_demo}; }} > {home}/{SHEBANG_SERVICE}
chmod 755 {home}/{SHEBANG_SERVICE}
"""
    result = server.run(script)
    assert result.returncode == 0, result.stderr
    yield {"python": server.python, "demo": remote_demo, "home": str(home)}
    remove_stand_in_conda(server)
    server.run(f"rm -rf {home}/bin")


def form_config(server: SSHServer, key: str, form: str, values: dict[str, str]) -> dict[str, Any]:
    """A config of the demo service in `form` for both launchers (direct mode: the server's address, the
    alias as ssh_hostname; the original's evaluates the same template)."""
    config: dict[str, Any] = {
        "workdir": "~/rhl-work",
        "hostname": server.host,
        "ssh_hostname": ALIAS,
        "network_interface": "0.0.0.0",
        "key": key,
        "command": FORMS[form].format(**values),
        "handshake": "healthcheck",
    }
    if form == "conda":
        config["conda"] = CONDA_ENV
    return config


def tools_yaml(directory: Path, values: dict[str, str]) -> Path:
    """0.4.5's whitelist: the first word of each form's command."""
    path = directory / "rhl-tools.yaml"
    firsts = {FORMS[form].format(**values).split()[0].strip("'") for form in FORMS}
    path.write_text(json.dumps({f"t{i}": {"command_template": f"{first} --x"} for i, first in enumerate(firsts)}))
    return path


def processes_of_key(server: SSHServer, key: str) -> list[int]:
    """Live processes that run with the key's status file as one of their arguments (the service: every
    form passes `--status-file`), whichever launcher started them."""
    path = f"{server.home}/{REMOTE_STATE}/{key}.json"
    return [pid for pid in processes_mentioning(path) if path in cmdline(pid)]


def kill_key(server: SSHServer, key: str) -> None:
    for pid in processes_of_key(server, key):
        killpg(pid, SIGKILL)


ORIGINAL_CASES = [(version, form) for version in ORIGINAL_VERSIONS for form in FORMS
                  if (version, form) not in UNLAUNCHABLE]


@pytest.mark.parametrize(("version", "form"), ORIGINAL_CASES, ids=[f"{v}-{f}" for v, f in ORIGINAL_CASES])
def test_we_reuse_what_the_original_launched_over_ssh(original_clients: dict[str, OriginalClient],
                                                      server: SSHServer, key: str, ssh_env: None, ssh_config: Path,
                                                      server_setup: dict[str, str], tmp_path: Path,
                                                      version: str, form: str) -> None:
    config = form_config(server, key, form, server_setup)
    try:
        launched = original_clients[version].launch(config, ssh_config, tools_yaml(tmp_path, server_setup))
        assert launched.returncode == 0, launched.stderr
        record = remote_state(server, key)
        assert record is not None and record["status"] == "running" and "start_time" not in record, record
        pid, port = record["pid"], record["port"]
        assert processes_of_key(server, key) == [pid] or form == "conda"  # 0.2.0's bash may wrap it

        payload = run(config)

        assert payload["port"] == port
        assert remote_state(server, key) == record  # reused as it is: nothing relaunched or rewritten
        assert alive(pid) and starts_in_log(server, key) == 1
        assert len(processes_of_key(server, key)) == 1
        assert status(config)["status"] == "running"
    finally:
        kill_key(server, key)


@pytest.mark.parametrize(("version", "form"), [(v, f) for v in ORIGINAL_VERSIONS for f in FORMS],
                         ids=[f"{v}-{f}" for v in ORIGINAL_VERSIONS for f in FORMS])
def test_the_original_reuses_what_we_launched_over_ssh(original_clients: dict[str, OriginalClient],
                                                       server: SSHServer, key: str, ssh_env: None, ssh_config: Path,
                                                       server_setup: dict[str, str], tmp_path: Path,
                                                       version: str, form: str) -> None:
    config = form_config(server, key, form, server_setup)
    try:
        payload = run(config)
        record = remote_state(server, key)
        assert record is not None and record["port"] == payload["port"]

        done = original_clients[version].launch(config, ssh_config, tools_yaml(tmp_path, server_setup))

        assert done.returncode == 0, done.stderr
        assert "reused-remote" in done.stderr
        assert remote_state(server, key) == record
        assert alive(record["pid"]) and starts_in_log(server, key) == 1
        assert len(processes_of_key(server, key)) == 1
    finally:
        kill_key(server, key)


def test_a_replacement_stops_the_originals_leftover_first(original_clients: dict[str, OriginalClient],
                                                          server: SSHServer, key: str, ssh_env: None,
                                                          ssh_config: Path, server_setup: dict[str, str],
                                                          tmp_path: Path) -> None:
    """When the recorded PID truly is another program now, the original's process of the key that still runs
    (found by the status file among its arguments) is stopped before the new launch: never two copies."""
    config = form_config(server, key, "tilde", server_setup)
    try:
        launched = original_clients["0.2.0"].launch(config, ssh_config, tools_yaml(tmp_path, server_setup))
        assert launched.returncode == 0, launched.stderr
        record = remote_state(server, key)
        assert record is not None
        leftover = record["pid"]
        other = server.run("setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!")
        record["pid"] = int(other.stdout.strip())  # the record now names another program of the user
        server.run(f"printf %s {shlex.quote(json.dumps(record))} > {REMOTE_STATE}/{key}.json")

        payload = run(config)

        new = remote_state(server, key)
        assert new is not None and new["pid"] != leftover and new["port"] == payload["port"]
        assert not alive(leftover)
        assert processes_of_key(server, key) == [new["pid"]]
        assert alive(record["pid"])  # the other program is not the service's: left alone
        server.run(f"kill {record['pid']}")
    finally:
        kill_key(server, key)


def test_a_service_that_rewrote_its_command_line_is_known_by_its_port(server: SSHServer, key: str,
                                                                     remote_demo: str, make_config: Factory,
                                                                     ssh_env: None) -> None:
    """A record without a start time whose process neither shows the recorded command nor the status file
    (it changed its own arguments) is still the service when its process group listens on the recorded port:
    reused, not launched a second time beside it."""
    status_file = f"{server.home}/{REMOTE_STATE}/{key}.json"
    code = (f"import os, runpy, sys; sys.argv = ['svc', '--status-file', os.environ['S'], '--host', '0.0.0.0']; "
            f"runpy.run_path({remote_demo!r}, run_name='__main__')")
    started = server.run(
        f"mkdir -p {REMOTE_STATE} rhl-work && S={shlex.quote(status_file)} && export S && setsid sh -c "
        + shlex.quote(f'printf \'{{"workdir": "~/rhl-work", "log": "{status_file[:-5]}.log", '
                      f'"command": "myservice --serve", "status": "starting", "pid": %s}}\' $$ > "$S" && '
                      f"exec {server.python} -c {shlex.quote(code)}")
        + f" > {REMOTE_STATE}/{key}.log 2>&1 < /dev/null &")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while (record := remote_state(server, key)) is None or record["status"] != "running":
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    pid = record["pid"]
    assert status_file not in cmdline(pid) and "myservice" not in " ".join(cmdline(pid))
    try:
        payload = run(make_config())

        assert payload["port"] == record["port"]
        assert remote_state(server, key) == record and alive(pid)
        assert starts_in_log(server, key) == 1
    finally:
        killpg(pid, SIGKILL)
