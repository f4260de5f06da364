"""The `remote-http-launcher` command.

`remote-http-launcher CONFIG` and `remote-http-launcher up CONFIG` are the same;
other subcommands manage services that already run. Errors print one line on
stderr (a traceback only with --log-level debug) and map to exit codes:
0 ok, 1 runtime failure, 2 usage or config error, 3 not running (status, logs), 4 tunnel down
(status), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from itertools import pairwise

from . import logsetup
from ._version import PROG
from .config import DEFAULT_CONNECTION_PERSIST, Config, LogOptions
from .errors import (
    ACCEPT_NEW_FLAG,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_TUNNEL_DOWN,
    EXIT_USAGE,
    HostKeyError,
    Interrupted,
    LauncherError,
    ServiceFailedError,
    UsageError,
)
from .progress import LEVELS, Progress
from .records import SimpleNamespace

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from .prompts import Prompt

    Handler = Callable[[SimpleNamespace, Config | None, Progress], int]

# The `up` command line's values when it names only the config: what `arguments.build_up_parser` gives
# (tests/test_cli.py checks), so the plain `remote-http-launcher CONFIG` needs no argparse.
UP_DEFAULTS = {"connection_dir": None, "dry_run": False, "json": False, "open": False, "connection_persist": None,
               "accept_new_host_key": False, "log_level": None, "log_file": None, "debug_log_file": None}
#: `up`'s options read without argparse (see `_parse_plain_up`): flags, and options taking one string.
UP_FLAGS = {"--dry-run": "dry_run", "--json": "json", "--open": "open", "--accept-new-host-key": "accept_new_host_key"}
UP_STRINGS = {"--connection-dir": "connection_dir", "--log-level": "log_level", "--log-file": "log_file",
              "--debug-log-file": "debug_log_file"}


def cmd_up(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from .commands.up import dry_run, up

    assert config is not None
    if args.dry_run:
        print(dry_run(config))
        return EXIT_OK
    payload, _ = up(config, connection_dir=args.connection_dir, progress=progress,
                    accept_new_host_key=args.accept_new_host_key)
    if args.json:
        print(_json(payload))
    if args.open:
        from .progress import open_in_browser, service_url

        if not open_in_browser(service_url(payload)):
            print(f"warning: no browser to open {service_url(payload)}; set $BROWSER", file=sys.stderr)
    return EXIT_OK


def _quiet(progress: Progress) -> Progress:
    """Phase lines only when asked for (log level basic/debug) or as a live line on a terminal."""
    return progress if progress.live or progress.level != "minimal" else Progress.silent()


def _ask(progress: Progress) -> Prompt | None:
    """Login questions on the terminal, each on a line of its own (the live line ends first)."""
    from . import prompts

    return prompts.before_asking(prompts.default(), progress.close)


def cmd_status(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.entries import RUNNING
    from .commands.status import status

    assert config is not None
    entry = status(config, connection_dir=args.connection_dir, progress=_quiet(progress),
                   prompt=_ask(progress), accept_new_host_key=args.accept_new_host_key)
    progress.close()
    print(_json(entry) if args.json else render.format_status(entry))
    if entry["status"] != RUNNING:
        return EXIT_NOT_RUNNING
    return EXIT_TUNNEL_DOWN if entry["client"]["tunnel_up"] is False else EXIT_OK


def cmd_stop(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.stop import stop

    assert config is not None
    result = render.stop_outcome(stop(config, connection_dir=args.connection_dir, timeout=args.timeout,
                                      keep_log=args.keep_log, progress=_quiet(progress),
                                      prompt=_ask(progress), accept_new_host_key=args.accept_new_host_key))
    progress.close()
    print(_json(result) if args.json else result["message"])
    return EXIT_OK


def cmd_logs(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
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
        print(_json({"key": evaluate_key(config), "log": result.text}))
    return EXIT_OK if result.running else EXIT_NOT_RUNNING


def cmd_list(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
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
        print(_json({"host": name, "state_dir": state_dir, "services": entries}))
    else:
        print(render.format_list(name, entries))
    return EXIT_OK


def cmd_connections(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .broker.control import connections

    found = connections()
    print(_json({"connections": found}) if args.json else render.format_connections(found))
    return EXIT_OK


def cmd_disconnect(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from .broker.control import disconnect

    ended = disconnect(args.host)
    if args.json:
        print(_json({"disconnected": ended}))
        return EXIT_OK
    names = ", ".join(f"{entry['host']} (pid {entry['pid']})" for entry in ended)
    print(f"disconnected {names}" if ended else f"no connection broker{' for ' + args.host if args.host else ''}")
    return EXIT_OK


def cmd_check(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    from . import render
    from .commands.check import check

    report = check(args.config_file, accept_new_host_key=args.accept_new_host_key)
    if args.json:
        print(_json(report, ensure_ascii=False))
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


def cmd_completion(args: SimpleNamespace, config: Config | None, progress: Progress) -> int:
    import shtab

    from .arguments import completion_parser

    print(shtab.complete(completion_parser(), shell=args.shell))
    return EXIT_OK


COMMANDS: dict[str, Handler] = {
    "up": cmd_up,
    "status": cmd_status,
    "stop": cmd_stop,
    "logs": cmd_logs,
    "list": cmd_list,
    "connections": cmd_connections,
    "disconnect": cmd_disconnect,
    "check": cmd_check,
    "completion": cmd_completion,
}


def parse(argv: Sequence[str]) -> tuple[SimpleNamespace, Handler]:
    plain = _parse_plain_up(argv)
    if plain is not None:
        return plain, cmd_up
    from .arguments import PARSERS, build_up_parser

    if argv and argv[0] in COMMANDS:
        return PARSERS[argv[0]](f"{PROG} {argv[0]}").parse_args(argv[1:], SimpleNamespace()), COMMANDS[argv[0]]
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
    return build_up_parser().parse_args(argv, SimpleNamespace()), cmd_up


def _parse_plain_up(argv: Sequence[str]) -> SimpleNamespace | None:
    """`CONFIG [OPTION...]` as `up`'s parser reads it, without importing argparse (with its `re` and
    `gettext`, a third of a warm run): the config first, then each option of UP_FLAGS and UP_STRINGS written
    out in full (`--name VALUE` or `--name=VALUE`, the value not starting with `-`). None for anything else,
    which argparse reads (or refuses) as it always did; tests/test_cli.py compares the two."""
    if not argv or argv[0] in COMMANDS or argv[0].startswith("-"):
        return None
    values: dict[str, object] = {"config": argv[0], **UP_DEFAULTS}
    rest = iter(argv[1:])
    for word in rest:
        name, equals, value = word.partition("=")
        if not equals and word in UP_FLAGS:
            values[UP_FLAGS[word]] = True
            continue
        if name not in UP_STRINGS:
            return None
        if not equals:
            value = next(rest, "-")  # none: argparse says what is missing
        if value.startswith("-") or (name == "--log-level" and value not in LEVELS):
            return None
        values[UP_STRINGS[name]] = value
    return SimpleNamespace(**values)


def _load(path: str, *, cache: bool) -> Config:
    """The config, its warnings (a field nothing reads) printed as one `warning:` line each."""
    from .config import load_config

    return load_config(path, cache=cache, warn=lambda message: print(f"warning: {message}", file=sys.stderr))


def next_step(exc: LauncherError, args: SimpleNamespace | None) -> str:
    """After a service failed, its whole log is one command away: say which."""
    config = getattr(args, "config", None)
    if not isinstance(exc, ServiceFailedError) or config is None:
        return ""
    import shlex

    return f"see the whole log with '{PROG} logs {shlex.quote(config)}'"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--log-level=debug" in argv or any(pair == ("--log-level", "debug") for pair in pairwise(argv))
    progress: Progress | None = None
    args: SimpleNamespace | None = None
    failure_json = False
    try:
        args, handler = parse(argv)
        failure_json = handler is cmd_up and args.json
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
        if isinstance(exc, HostKeyError):
            exc = exc.advising(ACCEPT_NEW_FLAG)
        step = next_step(exc, args)
        if step and "\n" in str(exc):  # after a log's last lines, on a line of its own
            return _failed(f"{exc}\n{step}", exc.exit_code, failure_json)
        return _failed(f"{exc}{'; ' if step else ''}{step}", exc.exit_code, failure_json)
    except KeyboardInterrupt as exc:
        if progress:
            progress.close()
        left = exc.left if isinstance(exc, Interrupted) and exc.left else ""
        return _failed(f"interrupted; {left}" if left else "interrupted", EXIT_INTERRUPTED, failure_json)
    except BrokenPipeError:  # e.g. `logs CONFIG | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line unless debugging
        if progress:
            progress.close()
        if debug:
            raise
        return _failed(f"internal error ({exc.__class__.__name__}: {exc}); rerun with --log-level debug and "
                       "report it", EXIT_RUNTIME, failure_json)


def _json(obj: object, *, ensure_ascii: bool = True) -> str:
    """What --json prints. `json` is imported only here: a first launch writes its state before it."""
    import json

    return json.dumps(obj, indent=2, ensure_ascii=ensure_ascii)


def _failed(message: str, code: int, as_json: bool) -> int:
    """The error line on stderr; for `up --json` also {"error", "exit"} on stdout, where a script reads."""
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        print(_json({"error": message, "exit": code}))
    return code


def console_main() -> NoReturn:
    """The program: `main()`, then exit. Everything is freed by the process's end, so Python's own shutdown
    is skipped where nothing waits for it (`_exit_at_once`); otherwise the garbage collections it makes
    (~10 ms after a launch) are."""
    code = main()
    _exit_at_once(code)
    import gc

    gc.freeze()
    raise SystemExit(code)


def _exit_at_once(code: int) -> None:
    """End the process now (`os._exit`) when Python's shutdown would do nothing but tear down modules (a few
    ms of every run): no exit handler registered (`logging` registers one that flushes the log files), no
    thread to wait for, and stdout and stderr written out. Otherwise return, for the usual shutdown."""
    import atexit

    handlers = getattr(atexit, "_ncallbacks", None)  # CPython's count of them; without it, the usual way
    threading = sys.modules.get("threading")
    if handlers is None or handlers() or (threading is not None and any(
            thread.is_alive() and not thread.daemon for thread in threading.enumerate()
            if thread is not threading.main_thread())):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the usual shutdown says so, as it always did
        return
    os._exit(code)
