"""The command line, run as a real subprocess (`python -m` and the installed entry point)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import cli as cli_module
from remote_http_launcher import run
from remote_http_launcher.arguments import build_up_parser
from remote_http_launcher.progress import Progress

from .conftest import DEMO_SERVICE, ROOT, cli

KEY = "demo-localhost"
PHASE_LINE = re.compile(r"^\d\d:\d\d:\d\d +\d+\.\d\ds \S")
Factory = Callable[..., dict[str, Any]]


def server_record(rhl_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((rhl_dir / "server" / f"{KEY}.json").read_text())
    return record


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# Launching -----------------------------------------------------------------------

@pytest.mark.parametrize("entry_point", [False, True], ids=["python-m", "entry-point"])
def test_json_prints_only_the_payload(rhl_dir: Path, config_file: Callable[..., Path], entry_point: bool) -> None:
    proc = cli(str(config_file()), "--json", entry_point=entry_point)

    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # nothing but JSON on stdout
    assert payload == json.loads((rhl_dir / "client" / f"{KEY}.json").read_text())
    assert payload["port"] == server_record(rhl_dir)["port"]
    # stderr is not a terminal: timestamped phase lines, ending with the summary
    lines = proc.stderr.splitlines()
    assert lines and all(PHASE_LINE.match(line) for line in lines), proc.stderr
    assert any(line.endswith("launching service on localhost") for line in lines)
    assert re.search(rf"ready: http://localhost:{payload['port']}/ \(\d+\.\d\d s\)$", lines[-1])


def test_without_json_stdout_is_empty(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "ready: http://localhost:" in proc.stderr


def test_a_plain_config_command_line_is_read_as_the_up_parser_reads_it() -> None:
    """The plain `remote-http-launcher CONFIG` is read without argparse: to the same values."""
    args, handler = cli_module.parse(["service.yaml"])
    assert handler is cli_module.cmd_up
    assert vars(args) == vars(build_up_parser().parse_args(["service.yaml"])) == {"config": "service.yaml",
                                                                                 **cli_module.UP_DEFAULTS}
    assert cli_module.parse(["up", "service.yaml"])[0] == args


PLAIN_WORDS = ["--dry-run", "--json", "--open", "--accept-new-host-key", "--log-level", "--log-file",
               "--debug-log-file", "--connection-dir", "--connection-persist", "--log-level=basic", "--log-file=",
               "--log-file=a=b", "--json=1", "--log", "--js", "basic", "debug", "loud", "-", "-x", "--", "x.log",
               "dir with space", "up", "-h", "--version", "5"]


def test_up_options_are_read_without_argparse_as_argparse_reads_them() -> None:
    """Every command line the plain reading takes gets the values `up`'s parser gives it, on thousands of
    generated ones (the rest go to argparse); the common ones are taken, and the option tables name
    `up`'s own options."""
    parser = build_up_parser()
    for option, dest in cli_module.UP_FLAGS.items():
        assert vars(parser.parse_args(["c", option]))[dest] is True
    for option, dest in cli_module.UP_STRINGS.items():
        assert vars(parser.parse_args(["c", option, "basic"]))[dest] == "basic"
    generator = random.Random(7)
    taken = 0
    for _ in range(5000):
        argv = ["service.yaml", *generator.choices(PLAIN_WORDS, k=generator.randint(0, 5))]
        plain = cli_module._parse_plain_up(argv)
        if plain is None:
            continue
        taken += 1
        assert vars(plain) == vars(parser.parse_args(argv)), argv
    assert taken > 500
    for argv in (["s.yaml", "--log-level", "basic"], ["s.yaml", "--json", "--log-file=x.log", "--dry-run"],
                 ["s.yaml", "--connection-dir", "dir", "--accept-new-host-key", "--open"]):
        assert cli_module._parse_plain_up(argv) is not None, argv


def test_up_subcommand_is_the_default(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    path = str(config_file())
    first = cli("up", path, "--json")
    assert first.returncode == 0, first.stderr
    pid = server_record(rhl_dir)["pid"]

    second = cli(path, "--json")
    third = cli("up", path, "--json")

    assert second.returncode == third.returncode == 0
    assert json.loads(first.stdout) == json.loads(second.stdout) == json.loads(third.stdout)
    assert "reconnected: http://localhost:" in second.stderr.splitlines()[-1]
    assert "reconnected: http://localhost:" in third.stderr.splitlines()[-1]
    assert server_record(rhl_dir)["pid"] == pid


def test_dry_run_prints_command_and_changes_nothing(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file()), "--dry-run")

    assert proc.returncode == 0, proc.stderr
    status_file = rhl_dir / "server" / f"{KEY}.json"
    assert proc.stdout == f"{sys.executable} {DEMO_SERVICE} --status-file {status_file} --host localhost \n"
    assert proc.stderr == ""
    assert not rhl_dir.exists()  # no directory, state file, lock or log was created


def test_dry_run_with_entry_point(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file(command="serve --key {key} --iface {config['network_interface']}")),
               "--dry-run", entry_point=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"serve --key {KEY} --iface localhost\n"
    assert not rhl_dir.exists()


# Help and usage errors -----------------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["-h"], ["up", "--help"]])
def test_help_exits_zero(args: list[str]) -> None:
    proc = cli(*args)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: remote-http-launcher")
    assert "--dry-run" in proc.stdout and "--connection-dir" in proc.stdout
    assert proc.stderr == ""


def test_help_via_entry_point() -> None:
    proc = cli("--help", entry_point=True)
    assert proc.returncode == 0
    assert "usage: remote-http-launcher" in proc.stdout


def test_no_arguments_is_a_usage_error() -> None:
    proc = cli()
    assert proc.returncode == 2
    assert "usage: remote-http-launcher" in proc.stderr


def test_missing_config_file(rhl_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = cli(str(missing))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"error: config: file {str(missing)!r} not found")
    assert proc.stdout == ""
    assert not rhl_dir.exists()


def test_unknown_option_is_one_line(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file()), "--no-such-option")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: ") and "--no-such-option" in proc.stderr
    assert not rhl_dir.exists()


# Runtime failures -------------------------------------------------------------------

def test_runtime_failure_is_one_line_without_traceback(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    path = config_file(command="echo boom; exit 4")
    proc = cli(str(path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {KEY}: service on localhost exited before reporting its port")
    assert errors[0].endswith(f"log: boom; see the whole log with 'remote-http-launcher logs {path}'")
    assert proc.stderr.splitlines()[-1] == errors[0]
    assert proc.stdout == ""


def test_runtime_failure_with_debug_shows_traceback(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file(command="echo boom; exit 4")), "--log-level", "debug")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ServiceFailedError" in proc.stderr  # a LaunchError
    assert proc.stderr.splitlines()[-1].startswith("error: ")


def test_log_files_are_written(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path) -> None:
    log_file, debug_file = tmp_path / "phases.log", tmp_path / "debug.log"
    proc = cli(str(config_file()), "--log-file", str(log_file), "--debug-log-file", str(debug_file))
    assert proc.returncode == 0, proc.stderr
    port = server_record(rhl_dir)["port"]
    for path in (log_file, debug_file):
        text = path.read_text()
        assert path.stat().st_mode & 0o777 == 0o600  # it names hosts and users
        assert "INFO launching service on localhost" in text
        assert f"INFO ready: http://localhost:{port}/" in text


def test_log_file_records_failure(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path) -> None:
    debug_file = tmp_path / "debug.log"
    proc = cli(str(config_file(command="false")), "--debug-log-file", str(debug_file))
    assert proc.returncode == 1
    assert "waiting for the service to report its port" in debug_file.read_text()


# State directories -------------------------------------------------------------------

def test_state_dir_from_environment(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file()), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((rhl_dir / "client" / f"{KEY}.json").read_text()) == json.loads(proc.stdout)
    assert (rhl_dir / "server" / f"{KEY}.json").is_file()
    assert (rhl_dir / "server" / f"{KEY}.log").is_file()


def test_connection_dir_option(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path) -> None:
    connections = tmp_path / "conn"
    proc = cli(str(config_file()), "--json", "--connection-dir", str(connections))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((connections / f"{KEY}.json").read_text()) == json.loads(proc.stdout)
    assert not (rhl_dir / "client").exists()


def test_connection_dir_equal_to_server_dir(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file()), "--connection-dir", str(rhl_dir / "server"))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"error: --connection-dir: {str(rhl_dir / 'server')!r} is the server state "
                                  "directory")
    assert not rhl_dir.exists()


# Terminal display ------------------------------------------------------------------------

def test_live_progress_redraws_one_line(rhl_dir: Path, demo_config: Factory) -> None:
    stream = io.StringIO()
    payload = run(demo_config(), progress=Progress("minimal", stream=stream, live=True))
    output = stream.getvalue()
    assert output.count("\n") == 1 and output.endswith("\n")
    frames = output[:-1].split("\r")
    assert re.fullmatch(rf"ready: http://localhost:{payload['port']}/ \(\d+\.\d\d s\)", frames[-1])
    assert frames[-2].strip() == ""  # the live line was erased before the summary
    assert any(re.fullmatch(r"launching service on localhost \(\d+\.\d s\) *", f) for f in frames)


def test_live_progress_isatty_decides(rhl_dir: Path, demo_config: Factory, mocker: Any) -> None:
    stream = io.StringIO()
    mocker.patch.object(stream, "isatty", return_value=True)
    progress = Progress("minimal", stream=stream)
    assert progress.live
    payload = run(demo_config(), progress=progress)
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().rstrip("\n").split("\r")[-1].startswith(f"ready: http://localhost:{payload['port']}/")
    assert not Progress("basic", stream=stream).live


def pty_run(*args: str) -> tuple[int, str]:
    """Run the CLI with a terminal as stdin/stdout/stderr (util-linux `script`)."""
    command = shlex.join([sys.executable, "-m", "remote_http_launcher", *args])
    proc = subprocess.run(["script", "-q", "-e", "-c", command, "/dev/null"], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "TERM": "dumb"})
    return proc.returncode, proc.stdout.decode().replace("\r\n", "\n")  # bytes: keep the bare \r


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")
def test_terminal_shows_live_line_then_summary(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    code, output = pty_run(str(config_file()))
    assert code == 0, output
    port = server_record(rhl_dir)["port"]
    assert output.count("\n") == 1 and output.endswith("\n"), repr(output)
    frames = output[:-1].split("\r")
    assert re.fullmatch(rf"ready: http://localhost:{port}/ \(\d+\.\d\d s\)", frames[-1]), repr(output)
    assert any(f.startswith("waiting for the service to report its port (") for f in frames)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")
def test_terminal_failure_erases_live_line(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    path = config_file(command="echo boom; exit 4")
    code, output = pty_run(str(path))
    assert code == 1, output
    assert output.count("\n") == 1, repr(output)
    last = output[:-1].split("\r")[-1]
    assert last.startswith(f"error: {KEY}: service on localhost exited before reporting its port")
    assert last.endswith(f"log: boom; see the whole log with 'remote-http-launcher logs {path}'")
    assert "Traceback" not in output


@pytest.mark.parametrize("spelling", ["trailing-slash", "dotdot", "symlink"])
def test_connection_dir_aliasing_server_dir(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path,
                                            spelling: str) -> None:
    """Any path to the server directory is refused, or the client file would replace the status file."""
    server = rhl_dir / "server"
    server.mkdir(parents=True)
    if spelling == "symlink":
        alias = tmp_path / "link-to-server"
        alias.symlink_to(server)
    else:
        alias = Path(f"{server}/") if spelling == "trailing-slash" else rhl_dir / "client" / ".." / "server"
    proc = cli(str(config_file()), "--connection-dir", f"{alias}/" if spelling == "trailing-slash" else str(alias))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert "is the server state directory" in proc.stderr
    assert list(server.iterdir()) == []  # nothing launched, nothing written


@pytest.mark.parametrize(("typo", "meant"), [("stauts", "status"), ("sotp", "stop"), ("lgos", "logs")])
def test_a_misspelled_subcommand_gets_a_suggestion(tmp_path: Path, config_file: Callable[..., Path],
                                                   typo: str, meant: str) -> None:
    proc = cli(typo, config_file())
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: remote-http-launcher: {typo!r} is neither a subcommand nor a config file; "
                           f"did you mean 'remote-http-launcher {meant}'? (subcommands: up, status, stop, logs, "
                           "list, connections, disconnect, check, completion)\n")


def test_readme_first_screen_starts_reconnects_and_stops_the_demo(rhl_dir: Path, client_home: Path) -> None:
    """The README's first commands, as a new user types them (from the repository root): the demo starts,
    keeps running, gives its address on stdout with --json, and the stop command shown there ends it."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line.split("#", 1)[0].split("&&")[-1])
                for line in block.splitlines() if "remote-http-launcher examples/" in line.split("#", 1)[0]
                or "remote-http-launcher stop" in line]
    assert [command[1:] for command in commands] == [["examples/local.yaml"], ["examples/local.yaml", "--json"],
                                                     ["stop", "examples/local.yaml"]], block
    assert "keeps running" in block

    def typed(command: list[str]) -> subprocess.CompletedProcess[str]:
        assert command[0] == "remote-http-launcher"
        return subprocess.run([sys.executable, "-m", "remote_http_launcher", *command[1:]], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    started = typed(commands[0])
    assert started.returncode == 0 and "ready: http://localhost:" in started.stderr, started.stderr
    again = typed(commands[1])
    assert again.returncode == 0 and "reconnected" in again.stderr, again.stderr
    payload = json.loads(again.stdout)
    assert payload["hostname"] == "localhost" and f"http://localhost:{payload['port']}/" in started.stderr
    stopped = typed(commands[2])
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped demo-localhost on localhost"), stopped
    assert typed(["remote-http-launcher", "status", "examples/local.yaml"]).returncode == 3


# What a newcomer meets ---------------------------------------------------------------

@pytest.mark.parametrize("subcommand", ["up", "status", "stop", "logs", "list", "connections", "disconnect", "check",
                                        "completion"])
def test_every_subcommand_help_states_its_exit_codes(subcommand: str) -> None:
    proc = cli(subcommand, "--help")
    assert proc.returncode == 0, proc.stderr
    codes = proc.stdout.split("exit codes: ", 1)[1]
    assert codes.startswith("0 ") and ", 2 " in codes.split("\n\n", 1)[0]


def test_connections_and_disconnect_take_no_flag_about_logins(rhl_dir: Path) -> None:
    """Both read and signal local brokers only: a host-key or log flag would do nothing, so it is refused;
    both print JSON as every listing command does."""
    for subcommand in ("connections", "disconnect"):
        help_text = cli(subcommand, "--help").stdout
        assert "--json" in help_text
        assert "--accept-new-host-key" not in help_text and "--log-file" not in help_text
        assert cli(subcommand, "--accept-new-host-key").returncode == 2
    proc = cli("disconnect", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"disconnected": []}


def test_up_json_failure_is_a_json_document_on_stdout(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli(str(config_file(command="echo boom; exit 4")), "--json")
    assert proc.returncode == 1
    failure = json.loads(proc.stdout)
    assert failure["exit"] == 1 and failure["error"].startswith(f"{KEY}: service on localhost exited before")
    assert error_lines(proc.stderr) == [f"error: {failure['error']}"]
    bad = cli(str(config_file(command="")), "--json")  # a config error: exit 2
    assert bad.returncode == 2 and json.loads(bad.stdout)["exit"] == 2


def test_a_failure_shows_the_log_as_lines_then_where_the_whole_log_is(rhl_dir: Path,
                                                                      config_file: Callable[..., Path]) -> None:
    path = config_file(command="echo starting; echo 'Traceback ...'; echo 'ValueError: bad option' >&2; exit 4")
    proc = cli(str(path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-5:] == [
        f"error: {KEY}: service on localhost exited before reporting its port; last 3 lines of its log:",
        "  starting", "  Traceback ...", "  ValueError: bad option",
        f"see the whole log with 'remote-http-launcher logs {path}'"]


def test_a_long_wait_says_still_waiting_every_ten_seconds(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    """Without a live line (--log-level basic), a phase of 21 s is not 21 silent seconds."""
    proc = cli(str(config_file(args="--ready-delay 21")), "--log-level", "basic")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    waiting = [line.split("s ", 1)[1] for line in lines if "still waiting" in line]
    assert waiting == ["still waiting (10 s): waiting for the service to report its port",
                       "still waiting (20 s): waiting for the service to report its port"]
    assert all(PHASE_LINE.match(line) for line in lines)


@pytest.mark.parametrize("host", ["bad host", "a..b", "u@@h", "x-", "1:::2"])
def test_list_refuses_a_host_that_is_not_an_ssh_host_name(rhl_dir: Path, host: str) -> None:
    proc = cli("list", "--host", host)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: --host: {host!r} is not an SSH host name (use HOST, USER@HOST or an alias from "
                           "~/.ssh/config)\n")


#: `_exit_at_once` after some buffered output, with something that waits for Python's shutdown or not.
EXIT_PROBE = """
import atexit, sys, threading
from remote_http_launcher.cli import _exit_at_once
waits = sys.argv[1]
if waits == "an exit handler":
    atexit.register(lambda: sys.stderr.write("handler ran\\n"))
elif waits == "a thread":
    done = threading.Event()
    threading.Thread(target=done.wait, args=(1,)).start()
print("buffered output" * 1000)
_exit_at_once(3)
sys.stderr.write("returned\\n")
sys.exit(4)
"""


@pytest.mark.parametrize("waits", ["nothing", "an exit handler", "a thread"])
def test_a_run_ends_at_once_unless_something_waits_for_the_shutdown(waits: str) -> None:
    """The CLI ends its process at once after a run (Python's shutdown only tears modules down, a few ms),
    its output written out whole, unless an exit handler (logging's flushes log files) or a thread waits
    for the shutdown: then the usual one runs them."""
    result = subprocess.run([sys.executable, "-c", EXIT_PROBE, waits], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.stdout == "buffered output" * 1000 + "\n"
    if waits == "nothing":
        assert (result.returncode, result.stderr) == (3, "")
    else:
        assert result.returncode == 4 and "returned" in result.stderr, result.stderr
        assert ("handler ran" in result.stderr) == (waits == "an exit handler")
