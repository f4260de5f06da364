"""The benchmark suite: `python -m benchmarks` (from the repository root).

Prints a Markdown table (metric, value, target, pass/miss); `--json` prints
JSON instead. Every timing is the median of several whole-process runs after
warm-up. Our launcher is measured as users install it: built from this
working tree into a cached venv with `pip install` (a wheel, not `-e`) and run
as `VENV/bin/python -m remote_http_launcher` from an empty directory outside
the repository (benchmarks/installs.py); the header names the file each
column imports. `--repeat N` runs the chosen sections N times and reports
each figure as the median over the N runs with their lowest and highest.
The SSH metrics need root (a throwaway user, sshd and a network namespace
from tests/sshd.py); without it they are reported as skipped. Everything the
suite starts is removed at the end, also on Ctrl-C.

The warm, cold and ssh sections also time the original implementation, PyPI
remote-http-launcher==0.2.0, in the same rounds, installed and run alike
(its rows are n/a when that is not possible, or with --no-original); the
targets are ratios to it, to `python -c pass`, or to OpenSSH's `ssh -L`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import CLEANUP, PYTHON, ROOT, Row, combine, dump_json, log, markdown, run_cwd, use_ours
from .installs import ensure_ours
from .original import Original, ensure_original

SECTIONS = ("warm", "cold", "ssh", "tunnel", "survive", "concurrency", "slurm", "renewal")
DEFAULT_SECTIONS = SECTIONS[:-1]  # "renewal" serves a job for minutes: only when asked for


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--runs", type=int, default=21, help="measured runs per local metric (median; default 21)")
    parser.add_argument("--ssh-runs", type=int, default=5, help="measured runs per SSH metric (default 5)")
    parser.add_argument("--rtt-ms", type=float, default=50.0,
                        help="added round-trip time for the slow link (default 50)")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all but renewal)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the chosen sections N times; each figure is the median over the N runs, "
                             "with their lowest and highest (default 1)")
    parser.add_argument("--profile", action="store_true", help="also print the per-step SSH profile after the table")
    parser.add_argument("--no-original", action="store_true",
                        help="do not install or time the original remote-http-launcher 0.2.0 (its rows show n/a)")
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def run_sections(args: argparse.Namespace, original: Original | str) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    from .local_bench import run_local

    got, more = run_local(args.runs, args.only, original)
    rows += got
    extra.update(more)
    if "ssh" in args.only:
        from .ssh_bench import run_ssh

        got, more = run_ssh(args.ssh_runs, args.rtt_ms / 1000, args.only, original)
        rows += got
        extra.update(more)
    if "tunnel" in args.only:
        from .tunnel_section import run_tunnel

        rows += run_tunnel(args.ssh_runs)
    if "survive" in args.only:
        from .survive_bench import run_survive

        rows += run_survive()
    if "slurm" in args.only:
        from .slurm_bench import run_slurm

        rows += run_slurm(args.ssh_runs, args.rtt_ms / 1000)
    if "renewal" in args.only:
        from .renewal_bench import run_renewal

        rows += run_renewal(args.rtt_ms / 1000)
    return rows, extra


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    CLEANUP.install_signal_handlers()
    os.chdir(ROOT)  # the suite itself imports tests/ (the SSH harness); what it measures runs in run_cwd()
    extra: dict[str, Any] = {"python": PYTHON, "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "load_before": os.getloadavg(), "repeat": args.repeat}
    repeats: list[list[Row]] = []
    try:
        try:
            ours = ensure_ours()
        except Exception as exc:
            log(f"could not install our package from {ROOT} into a venv: {exc}")
            return 1
        use_ours(ours.python)
        installs = [ours.header()]
        original: Original | str = "skipped (--no-original)"
        if not args.no_original and args.only & {"warm", "cold", "ssh"}:
            original = ensure_original(Path(run_cwd()))
        installs.append(original.install.header() if isinstance(original, Original) else f"original: {original}")
        extra["installs"] = {"ours": ours.describe(),
                             "original": original.describe() if isinstance(original, Original) else original}
        for i in range(args.repeat):
            if args.repeat > 1:
                log(f"repetition {i + 1} of {args.repeat}")
            rows, more = run_sections(args, original)
            repeats.append(rows)
            extra.update(more)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        CLEANUP.run()
        return 130
    finally:
        CLEANUP.run()
    rows = combine(repeats)
    extra["load_after"] = os.getloadavg()
    if args.json:
        extra["repetitions"] = [[r.to_json() for r in rep] for rep in repeats]
        print(dump_json(rows, extra))
    else:
        print("\n".join(f"- {line}" for line in installs) + "\n")
        print(markdown(rows))
        print(f"\n{PYTHON}, {os.cpu_count()} CPUs, load average {extra['load_before'][0]:.2f} before, "
              f"{extra['load_after'][0]:.2f} after (other load inflates every timing; compare with `python -c pass`)")
        if args.profile and extra.get("ssh_profile_text"):
            print()
            print(extra["ssh_profile_text"])
    misses = [r.metric for r in rows if r.ok is False]
    if misses:
        log(f"{len(misses)} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
