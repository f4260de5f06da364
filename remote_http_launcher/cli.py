"""The `remote-http-launcher` command.

`remote-http-launcher CONFIG` and `remote-http-launcher up CONFIG` are the same;
other subcommands manage services that already run. Errors print one line on
stderr (a traceback only with --log-level debug) and map to exit codes:
0 ok, 1 runtime failure, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, ConfigError, LauncherError
from .progress import LEVELS, Progress

PROG = "remote-http-launcher"
UP_EXAMPLE = f"""example:
  {PROG} examples/local.yaml            # start the demo service, or reconnect to it
  {PROG} service.yaml --json > conn.json  # connection payload for scripts
"""


class UsageError(ConfigError):
    """A command-line mistake (argparse's own errors would exit without our format)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="minimal",
                        help="console detail: minimal (live line on a terminal), basic (phase lines), "
                             "debug (everything, tracebacks included)")
    parser.add_argument("--log-file", metavar="F", help="also write phase lines to F")
    parser.add_argument("--debug-log-file", metavar="F", help="also write a debug log to F")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML file describing the service")
    parser.add_argument("--connection-dir", metavar="DIR",
                        help="directory of client connection files (default: ~/.remote-http-launcher/client, "
                             "or $REMOTE_HTTP_LAUNCHER_DIR/client)")


def build_up_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Launch the service described by CONFIG, or reconnect to it, "
                     "and write its client connection file.", epilog=UP_EXAMPLE,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the evaluated command; change nothing")
    parser.add_argument("--json", action="store_true", help="print the connection payload as JSON on stdout")
    add_common(parser)
    return parser


def cmd_up(args: argparse.Namespace, progress: Progress) -> int:
    from .config import load_config
    from .launcher import Launcher

    launcher = Launcher(load_config(args.config), connection_dir=args.connection_dir, progress=progress)
    if args.dry_run:
        print(launcher.dry_run())
        return EXIT_OK
    payload = launcher.up()
    if args.json:
        print(json.dumps(payload, indent=2))
    return EXIT_OK


Command = tuple[Callable[[str], argparse.ArgumentParser], Callable[[argparse.Namespace, Progress], int]]
COMMANDS: dict[str, Command] = {"up": (build_up_parser, cmd_up)}


def configure_logging(args: argparse.Namespace) -> None:
    logger = logging.getLogger("remote_http_launcher")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    targets: list[tuple[logging.Handler, int]] = []
    if args.log_file:
        targets.append((logging.FileHandler(args.log_file, mode="w"), logging.INFO))
    if args.debug_log_file:
        targets.append((logging.FileHandler(args.debug_log_file, mode="w"), logging.DEBUG))
    if args.log_level == "debug":
        targets.append((logging.StreamHandler(sys.stderr), logging.DEBUG))
    for handler, level in targets:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        if level == logging.DEBUG:
            logging.getLogger("paramiko").addHandler(handler)
            logging.getLogger("paramiko").setLevel(logging.DEBUG)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Callable[[argparse.Namespace, Progress], int]]:
    if argv and argv[0] in COMMANDS:
        build, handler = COMMANDS[argv[0]]
        return build(f"{PROG} {argv[0]}").parse_args(argv[1:]), handler
    if not argv or argv[0] in ("-h", "--help"):
        stream = sys.stdout if argv else sys.stderr
        print(build_up_parser().format_help() + f"\nsubcommands: {', '.join(COMMANDS)} "
              f"(see '{PROG} SUBCOMMAND --help')", file=stream)
        raise SystemExit(EXIT_OK if argv else EXIT_USAGE)
    return build_up_parser().parse_args(argv), cmd_up


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--log-level=debug" in argv or any(a == "debug" and p == "--log-level" for p, a in zip(argv, argv[1:]))
    progress: Progress | None = None
    try:
        args, handler = parse(argv)
        configure_logging(args)
        progress = Progress(args.log_level, quiet=getattr(args, "dry_run", False))
        return handler(args, progress)
    except LauncherError as exc:
        if progress:
            progress.close()
        if debug:
            logging.getLogger("remote_http_launcher").exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if progress:
            progress.close()
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless debugging
        if progress:
            progress.close()
        if debug:
            raise
        print(f"error: internal error ({exc.__class__.__name__}: {exc}); rerun with --log-level debug "
              "and report it", file=sys.stderr)
        return EXIT_RUNTIME
