"""The `remote-http-launcher` command.

`remote-http-launcher CONFIG` and `remote-http-launcher up CONFIG` are the same;
other subcommands manage services that already run. Errors print one line on
stderr (a traceback only with --log-level debug) and map to exit codes:
0 ok, 1 runtime failure, 2 usage or config error, 3 not running (status, logs), 4 tunnel down
(status), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise

from . import logsetup
from .config import DEFAULT_CONNECTION_PERSIST, Config, LogOptions
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_TUNNEL_DOWN,
    EXIT_USAGE,
    LauncherError,
    ServiceFailedError,
    UsageError,
)
from .progress import LEVELS, Progress

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from typing import NoReturn

    from .prompts import Prompt

PROG = "remote-http-launcher"
MAX_PERSIST = 604800.0  # seconds, as config.py's MAX_TIMEOUT
UP_EXAMPLE = f"""example:
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
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the version and exit")


def cmd_up(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from .commands.up import dry_run, up

    assert config is not None
    if args.dry_run:
        print(dry_run(config))
        return EXIT_OK
    payload, _ = up(config, connection_dir=args.connection_dir, progress=progress,
                    accept_new_host_key=args.accept_new_host_key)
    if args.json:
        print(json.dumps(payload, indent=2))
    if args.open:
        from .progress import open_in_browser, service_url

        if not open_in_browser(service_url(payload)):
            print(f"warning: no browser to open {service_url(payload)}; set $BROWSER", file=sys.stderr)
    return EXIT_OK


STATUS_EXAMPLE = f"""exit codes: 0 running, 3 not running (absent, starting, failed, stale), 4 running but its
tunnel is down, 1 error, 2 bad config

example:
  {PROG} status examples/local.yaml
  {PROG} status service.yaml --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])'
"""
STOP_EXAMPLE = f"""Only the process that was launched is signalled (PID and start time must match), so a
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
LIST_EXAMPLE = f"""example:
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


def _quiet(progress: Progress) -> Progress:
    """Phase lines only when asked for (log level basic/debug) or as a live line on a terminal."""
    return progress if progress.live or progress.level != "minimal" else Progress.silent()


def _ask(progress: Progress) -> Prompt | None:
    """Login questions on the terminal, each on a line of its own (the live line ends first)."""
    from . import prompts

    return prompts.before_asking(prompts.default(), progress.close)


def cmd_status(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.entries import RUNNING
    from .commands.status import status

    assert config is not None
    entry = status(config, connection_dir=args.connection_dir, progress=_quiet(progress),
                   prompt=_ask(progress), accept_new_host_key=args.accept_new_host_key)
    progress.close()
    print(json.dumps(entry, indent=2) if args.json else render.format_status(entry))
    if entry["status"] != RUNNING:
        return EXIT_NOT_RUNNING
    return EXIT_TUNNEL_DOWN if entry["client"]["tunnel_up"] is False else EXIT_OK


def cmd_stop(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.stop import stop

    assert config is not None
    result = render.stop_outcome(stop(config, connection_dir=args.connection_dir, timeout=args.timeout,
                                      keep_log=args.keep_log, progress=_quiet(progress),
                                      prompt=_ask(progress), accept_new_host_key=args.accept_new_host_key))
    progress.close()
    print(json.dumps(result, indent=2) if args.json else result["message"])
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    """Exit 0 while the service runs, 3 when it does not (its log is printed all the same; a follow ends
    when the service does), 130 when Ctrl-C ends a follow, as for every command."""
    from .commands.logs import read_logs
    from .config import evaluate_key

    assert config is not None
    if args.json and args.follow:
        raise UsageError(f"{PROG} logs: --json and --follow cannot be combined (a stream is not one document)")
    output = None if args.json else sys.stdout.buffer
    try:
        result = read_logs(config, tail=args.tail, tail_bytes=args.tail_bytes, output=output, follow=args.follow,
                           progress=_quiet(progress), prompt=_ask(progress),
                           accept_new_host_key=args.accept_new_host_key)
    except KeyboardInterrupt:
        if not args.follow:
            raise
        return EXIT_INTERRUPTED  # the usual way to end a follow: no "error: interrupted" line
    if args.json:
        print(json.dumps({"key": evaluate_key(config), "log": result.text}, indent=2))
    return EXIT_OK if result.running else EXIT_NOT_RUNNING


def cmd_list(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.listing import list_services
    from .connect import open_target

    progress = _quiet(progress)
    progress.phase(f"connecting to {args.host}" if args.host else "reading server state")
    persist = DEFAULT_CONNECTION_PERSIST if args.connection_persist is None else args.connection_persist
    with open_target(args.host, _ask(progress), persist, accept_new_host_key=args.accept_new_host_key) as host:
        entries = list_services(host)
        name, state_dir = host.name, host.state_dir
    progress.close()
    if args.json:
        print(json.dumps({"host": name, "state_dir": state_dir, "services": entries}, indent=2))
    else:
        print(render.format_list(name, entries))
    return EXIT_OK


CONNECTIONS_EXAMPLE = f"""A connection broker keeps one SSH login per host for the commands and tunnels that use it,
and ends after connection_persist seconds unused (see --connection-persist).

example:
  {PROG} connections
  {PROG} disconnect user@server          # or without HOST: every broker
"""


def build_connections_parser(prog: str = f"{PROG} connections") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "List the connection brokers of this user: host, since, last use, "
                               "commands using it now.", CONNECTIONS_EXAMPLE, config=False,
                               json_help="print one JSON document on stdout")
    add_common(parser)
    return parser


def build_disconnect_parser(prog: str = f"{PROG} disconnect") -> argparse.ArgumentParser:
    parser = _command_parser(prog, "End the connection broker of HOST (as the configs name it), or every "
                               "broker. The next command logs in again.", CONNECTIONS_EXAMPLE, config=False)
    parser.add_argument("host", metavar="HOST", nargs="?", help="the SSH host (default: all)")
    add_common(parser)
    return parser


def cmd_connections(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .broker.control import connections

    found = connections()
    print(json.dumps({"connections": found}, indent=2) if args.json else render.format_connections(found))
    return EXIT_OK


def cmd_disconnect(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from .broker.control import disconnect

    ended = disconnect(args.host)
    names = ", ".join(f"{entry['host']} (pid {entry['pid']})" for entry in ended)
    print(f"disconnected {names}" if ended else f"no connection broker{' for ' + args.host if args.host else ''}")
    return EXIT_OK


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


def cmd_check(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.check import check

    report = check(args.config_file, accept_new_host_key=args.accept_new_host_key)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render.format_checks(report, marks=_can_print("✓✗→·")))
    if report["config_error"]:
        return EXIT_USAGE
    return EXIT_OK if report["ok"] else EXIT_RUNTIME


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


COMPLETION_SHELLS = ("bash", "zsh", "fish")
COMPLETION_EXAMPLE = f"""Completes subcommands, their flags, and config file names (YAML files first where the
shell can tell).

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
    for name, (build, _) in COMMANDS.items():
        parser = build(f"{PROG} {name}")
        sub = subcommands.add_parser(name, parents=[parser], add_help=False, help=parser.description)
        for action in sub._actions:  # argparse's list of a parser's arguments; it has no public one
            if action.metavar == "CONFIG":
                action.complete = CONFIG_FILES  # type: ignore[attr-defined]  # shtab reads this attribute
    return root


def cmd_completion(args: argparse.Namespace, config: Config | None, progress: Progress) -> int:
    import shtab

    print(shtab.complete(completion_parser(), shell=args.shell))
    return EXIT_OK


Handler = Callable[[argparse.Namespace, "Config | None", Progress], int]
Command = tuple[Callable[[str], argparse.ArgumentParser], Handler]
COMMANDS: dict[str, Command] = {
    "up": (build_up_parser, cmd_up),
    "status": (build_status_parser, cmd_status),
    "stop": (build_stop_parser, cmd_stop),
    "logs": (build_logs_parser, cmd_logs),
    "list": (build_list_parser, cmd_list),
    "connections": (build_connections_parser, cmd_connections),
    "disconnect": (build_disconnect_parser, cmd_disconnect),
    "check": (build_check_parser, cmd_check),
    "completion": (build_completion_parser, cmd_completion),
}


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Handler]:
    if argv and argv[0] in COMMANDS:
        build, handler = COMMANDS[argv[0]]
        return build(f"{PROG} {argv[0]}").parse_args(argv[1:]), handler
    if not argv or argv[0] in ("-h", "--help"):
        stream = sys.stdout if argv else sys.stderr
        print(build_up_parser().format_help() + f"\nsubcommands: {', '.join(COMMANDS)} "
              f"(see '{PROG} SUBCOMMAND --help')", file=stream)
        raise SystemExit(EXIT_OK if argv else EXIT_USAGE)
    if len(argv) > 1 and not argv[0].startswith("-") and not os.path.exists(argv[0]):
        import difflib  # only for a first word that is neither a subcommand nor a file: a typo?

        close = difflib.get_close_matches(argv[0], COMMANDS, n=1, cutoff=0.6)
        if close:
            raise UsageError(f"{PROG}: {argv[0]!r} is neither a subcommand nor a config file; did you mean "
                             f"'{PROG} {close[0]}'? (subcommands: {', '.join(COMMANDS)})")
    return build_up_parser().parse_args(argv), cmd_up


def _load(path: str, *, cache: bool) -> Config:
    """The config, its warnings (a field nothing reads) printed as one `warning:` line each."""
    import warnings

    from .config import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path, cache=cache)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return config


def next_step(exc: LauncherError, args: argparse.Namespace | None) -> str:
    """After a service failed, its whole log is one command away: say which."""
    config = getattr(args, "config", None)
    if not isinstance(exc, ServiceFailedError) or config is None:
        return ""
    return f"; see the whole log with '{PROG} logs {shlex.quote(config)}'"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--log-level=debug" in argv or any(pair == ("--log-level", "debug") for pair in pairwise(argv))
    progress: Progress | None = None
    args: argparse.Namespace | None = None
    try:
        args, handler = parse(argv)
        dry_run = getattr(args, "dry_run", False)
        config = None
        if getattr(args, "config", None) is not None:
            config = _load(args.config, cache=handler is cmd_up and not dry_run)
            if args.connection_persist is not None:
                config = config._replace(connection_persist=args.connection_persist)
        options = logsetup.merge(LogOptions(getattr(args, "log_level", None), getattr(args, "log_file", None),
                                            getattr(args, "debug_log_file", None)),
                                 config.log if config else None)
        debug = debug or options.level == "debug"
        if not dry_run:  # a dry run writes nothing, logs included
            logsetup.configure(options)
        # At debug level the log handler on stderr already shows every phase.
        progress = Progress(options.level or logsetup.DEFAULT_LEVEL, quiet=dry_run or options.level == "debug")
        return handler(args, config, progress)
    except LauncherError as exc:
        if progress:
            progress.close()
        if debug:
            import logging

            logging.getLogger("remote_http_launcher").exception("failed")
        print(f"error: {exc}{next_step(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if progress:
            progress.close()
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `logs CONFIG | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line unless debugging
        if progress:
            progress.close()
        if debug:
            raise
        print(f"error: internal error ({exc.__class__.__name__}: {exc}); rerun with --log-level debug "
              "and report it", file=sys.stderr)
        return EXIT_RUNTIME


def console_main() -> NoReturn:
    """The program: `main()`, then exit. Everything is freed by the process's end, so the garbage
    collections Python makes while shutting down (~10 ms after a launch) are skipped."""
    code = main()
    import gc

    gc.freeze()
    raise SystemExit(code)
