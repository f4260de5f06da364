"""The command line's grammar: one argparse parser per subcommand.

Imported only for a command line other than the plain `remote-http-launcher CONFIG` (`cli.parse`):
argparse, with the locale and gettext modules it brings, costs a tenth of a warm run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ._version import PROG, __version__
from .errors import UsageError
from .progress import LEVELS

TYPE_CHECKING = False  # not typing's (records.py)
if TYPE_CHECKING:
    from typing import NoReturn

MAX_PERSIST = 604800.0  # seconds, as config.py's MAX_TIMEOUT
UP_EXAMPLE = f"""exit codes: 0 running (launched or reconnected), 1 runtime failure, 2 usage or config error,
130 interrupted (a line says what is left running). With --json a failure prints
{{"error": MESSAGE, "exit": CODE}} on stdout instead of the payload.

example:
  {PROG} examples/local.yaml            # start the demo service, or reconnect to it
  {PROG} service.yaml --json > conn.json  # connection payload for scripts
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, sized without `shutil`: argparse makes one per argument, and importing
    shutil (with bz2 and lzma) costs ~2 ms of every run, the warm path's included."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _terminal_columns() - 2)


def _terminal_columns() -> int:
    """What shutil.get_terminal_size() would say: $COLUMNS, the terminal's width, or 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
    except (OSError, ValueError, AttributeError):
        return 80


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accept-new-host-key", action="store_true",
                        help="trust an SSH host whose key is not in known_hosts yet (check its fingerprint first): "
                             "record the key as OpenSSH would look it up (HostKeyAlias, or [host]:port); a changed "
                             "key is refused all the same")
    parser.add_argument("--log-level", choices=LEVELS,
                        help="console detail: minimal (the default: a live line on a terminal), basic (phase "
                             "lines), debug (everything, tracebacks included); wins over the config's log_level")
    parser.add_argument("--log-file", metavar="F", help="also write phase lines to F (wins over log_file)")
    parser.add_argument("--debug-log-file", metavar="F",
                        help="also write a debug log to F (wins over debug_log_file)")


def add_persist(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connection-persist", type=_persist, metavar="S",
                        help="keep the SSH login in a local connection broker for S seconds after its last use "
                             "(default: the config's connection_persist, else 600); 0: no broker")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML file describing the service")
    parser.add_argument("--connection-dir", metavar="DIR",
                        help="directory of client connection files (default: ~/.remote-http-launcher/client, "
                             "or $REMOTE_HTTP_LAUNCHER_DIR/client)")


def build_up_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Launch the service described by CONFIG, or reconnect to it, "
                     "and write its client connection file.", epilog=UP_EXAMPLE,
                     formatter_class=_Formatter)
    add_config(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command a launch would run (for an SSH service, ~ stands for the SSH "
                             "user's home); connect to nothing, change nothing")
    parser.add_argument("--json", action="store_true", help="print the connection payload as JSON on stdout")
    parser.add_argument("--open", action="store_true",
                        help="open the service's URL in your browser (Python's webbrowser: $BROWSER is honoured)")
    add_persist(parser)
    add_common(parser)
    add_version(parser)
    return parser


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the version and exit")



STATUS_EXAMPLE = f"""exit codes: 0 running, 3 not running (absent, starting, failed, stale), 4 running but its
tunnel is down, 1 error, 2 bad config

example:
  {PROG} status examples/local.yaml
  {PROG} status service.yaml --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])'
"""
STOP_EXAMPLE = f"""exit codes: 0 stopped (or was not running), 1 error, 2 bad config

Only the process that was launched is signalled (PID and start time must match), so a
reused PID is never touched. Stopping a stopped service succeeds, and removes what a service that
died left behind.

example:
  {PROG} stop examples/local.yaml
  {PROG} stop service.yaml --timeout 30   # allow a slow shutdown before SIGKILL
  {PROG} stop service.yaml --keep-log     # then '{PROG} logs service.yaml' still shows its last run
"""
LOGS_EXAMPLE = f"""exit codes: 0 the service runs, 3 it does not (its log is printed all the same; a follow ends
with the service), 130 Ctrl-C, 1 error, 2 bad config

example:
  {PROG} logs examples/local.yaml --tail 100
  {PROG} logs service.yaml --follow       # like tail -f; ends with the service or Ctrl-C
"""
LIST_EXAMPLE = f"""exit codes: 0 listed, 1 error (the host cannot be reached), 2 usage error

example:
  {PROG} list                             # services on this machine
  {PROG} list --host user@server --json   # services on an SSH host (user@host or ~/.ssh/config alias)
"""


def _command_parser(prog: str, description: str, epilog: str, *, config: bool = True,
                      json_help: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description, epilog=epilog,
                     formatter_class=_Formatter)
    if config:
        add_config(parser)
    if json_help:
        parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _persist(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_PERSIST:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to {MAX_PERSIST:.0f}, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def build_status_parser(prog: str = f"{PROG} status") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "Show whether the service described by CONFIG runs: status (absent, "
                               "starting, running, failed, stale), pid, port, uptime, workdir, log, and the "
                               "client side (connection file, tunnel keeper).", STATUS_EXAMPLE,
                               json_help="print one JSON document on stdout")
    add_persist(parser)
    add_common(parser)
    return parser


def build_stop_parser(prog: str = f"{PROG} stop") -> argparse.ArgumentParser:
    from .service import STOP_TIMEOUT

    parser = _command_parser(prog, "Stop the service described by CONFIG (SIGTERM to its process group, "
                               "SIGKILL after --timeout), stop its tunnel keeper, and remove its status, lock "
                               "and connection files and its logs (the service's and the tunnel keeper's).",
                               STOP_EXAMPLE,
                               json_help="print the outcome as one JSON document on stdout")
    parser.add_argument("--timeout", type=_seconds, default=STOP_TIMEOUT, metavar="S",
                        help=f"seconds to wait after SIGTERM before SIGKILL (default {STOP_TIMEOUT:g})")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep the service's log and the tunnel keeper's log (for 'logs' after the stop)")
    add_persist(parser)
    add_common(parser)
    return parser


def build_logs_parser(prog: str = f"{PROG} logs") -> argparse.ArgumentParser:
    from .commands.logs import DEFAULT_TAIL, TAIL_MAX_BYTES

    parser = _command_parser(prog, "Print the log of the service described by CONFIG (its output, on the "
                               "host that runs it).", LOGS_EXAMPLE,
                               json_help="print {key, log} as one JSON document (not with --follow)")
    parser.add_argument("--tail", type=_count, default=DEFAULT_TAIL, metavar="N",
                        help=f"print the last N lines (default {DEFAULT_TAIL})")
    parser.add_argument("--tail-bytes", type=_count, default=TAIL_MAX_BYTES, metavar="B",
                        help=f"read at most the last B bytes of the log for those lines, and B bytes at a time "
                             f"with --follow (default {TAIL_MAX_BYTES}: a line may be that long)")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="then keep printing new output until the service ends or Ctrl-C")
    add_persist(parser)
    add_common(parser)
    return parser


def build_list_parser(prog: str = f"{PROG} list") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "List every service with a status file on a host: key, status, pid, port, "
                               "age. Stale entries (process gone) are marked.", LIST_EXAMPLE, config=False,
                               json_help="print one JSON document on stdout")
    parser.add_argument("--host", metavar="SSH_HOST", help="list an SSH host's services (default: this machine)")
    add_persist(parser)
    add_common(parser)
    return parser



CONNECTIONS_EXAMPLE = f"""A connection broker keeps one SSH login per host for the commands and tunnels that use it,
and ends after connection_persist seconds unused (see --connection-persist). Both commands
read and signal this machine's brokers only: they log in nowhere.

exit codes: 0 done (also when there is no broker), 1 error, 2 usage error

example:
  {PROG} connections
  {PROG} disconnect user@server          # or without HOST: every broker
"""


def build_connections_parser(prog: str = f"{PROG} connections") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "List the connection brokers of this user: host, since, last use, "
                               "commands using it now.", CONNECTIONS_EXAMPLE, config=False,
                               json_help="print one JSON document on stdout")
    return parser


def build_disconnect_parser(prog: str = f"{PROG} disconnect") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "End the connection broker of HOST (as the configs name it), or every "
                               "broker. The next command logs in again.", CONNECTIONS_EXAMPLE, config=False,
                               json_help="print the brokers ended as one JSON document on stdout")
    parser.add_argument("host", metavar="HOST", nargs="?", help="the SSH host (default: all)")
    return parser



CHECK_EXAMPLE = f"""Walks every step a launch takes (the config, the SSH target as ~/.ssh/config resolves it, the
server's port, its host key, a login that needs no answer, then on the service's host sh, the state
directory, the workdir, conda, the command's program, the scheduler's commands) without launching or
changing anything, and says what to do about each failure.

exit codes: 0 every check passed, 1 a check failed, 2 the config is invalid

example:
  {PROG} check examples/local.yaml
  {PROG} check service.yaml --json
"""


def build_check_parser(prog: str = f"{PROG} check") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Check whether the service described by CONFIG can be launched: "
                     "one line per step, with what to do for each that fails.", epilog=CHECK_EXAMPLE,
                     formatter_class=_Formatter)
    # Not `config`: the command loads the file itself, so that an invalid one is a line of the checklist.
    parser.add_argument("config_file", metavar="CONFIG", help="YAML file describing the service")
    parser.add_argument("--json", action="store_true", help="print the checks as one JSON document on stdout")
    add_common(parser)
    return parser



COMPLETION_SHELLS = ("bash", "zsh", "fish")
COMPLETION_EXAMPLE = f"""Completes subcommands, their flags, and config file names (YAML files first where the
shell can tell).

exit codes: 0 printed, 2 usage error (an unknown shell)

example:
  {PROG} completion bash > ~/.local/share/bash-completion/completions/{PROG}
  {PROG} completion zsh > ~/.zfunc/_{PROG}       # a directory on your $fpath
  {PROG} completion fish > ~/.config/fish/completions/{PROG}.fish
"""
# How each shell completes a config file name: YAML files (and directories to walk into) where it can filter.
CONFIG_FILES = {"bash": "_shtab_compgen_files", "zsh": "_files -g '*.(yaml|yml)'",
                "fish": "(__fish_complete_suffix .yaml)"}


def build_completion_parser(prog: str = f"{PROG} completion") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "Print a shell completion script for bash, zsh or fish.", COMPLETION_EXAMPLE,
                             config=False)
    parser.add_argument("shell", metavar="SHELL", choices=COMPLETION_SHELLS, help=", ".join(COMPLETION_SHELLS))
    return parser


def completion_parser() -> argparse.ArgumentParser:
    """Every subcommand's own parser under one root, as completion generators read a command line."""
    root = argparse.ArgumentParser(prog=PROG, description="Launch, supervise and reconnect to HTTP services.")
    add_version(root)
    subcommands = root.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for name, build in PARSERS.items():
        parser = build(f"{PROG} {name}")
        sub = subcommands.add_parser(name, parents=[parser], add_help=False, help=parser.description)
        for action in sub._actions:  # argparse's list of a parser's arguments; it has no public one
            if action.metavar == "CONFIG":
                action.complete = CONFIG_FILES  # type: ignore[attr-defined]  # shtab reads this attribute
    return root


PARSERS: dict[str, Callable[[str], argparse.ArgumentParser]] = {
    "up": build_up_parser,
    "status": build_status_parser,
    "stop": build_stop_parser,
    "logs": build_logs_parser,
    "list": build_list_parser,
    "connections": build_connections_parser,
    "disconnect": build_disconnect_parser,
    "check": build_check_parser,
    "completion": build_completion_parser,
}
