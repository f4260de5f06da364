"""Where the local paths' time goes: `python -m benchmarks.profile_local [--runs 11]`.

Runs the installed package (benchmarks/installs.py) from outside the
repository, as the benchmark does, under `python -X importtime`: the warm
path (client file present, service healthy) and a cold local launch of the
tiny service (fresh state directory, so no kept parse: PyYAML is imported).
For each, it prints the modules by median self time over `--runs` processes,
with the module that imported each one, and the stdlib modules our package
pulls in, by median cumulative time. Figures are CPU-bound import work and
grow with other load on the machine; compare them within one run.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import subprocess
import sys

from .common import CLEANUP, TINY_SERVICE, kill_services_in, launcher_argv, run_cwd, timed_run, use_ours
from .installs import ensure_ours
from .local_bench import DEMO_SERVICE, IMPORT_LINE, Workspace, env_for

OURS = "remote_http_launcher"
TOP = 25


def importtime(argv: list[str], env: dict[str, str]) -> list[tuple[int, str, int, int]]:
    """(indent, module, self µs, cumulative µs) of one process, in importtime's order (children first)."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=run_cwd(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    rows = []
    for line in proc.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            rows.append((len(match[3]), match[4], int(match[1]), int(match[2])))
    return rows


def importers(rows: list[tuple[int, str, int, int]]) -> dict[str, str]:
    """Each module's importer: the next line with a smaller indent (importtime prints children first)."""
    found = {}
    for i, (indent, name, _, _) in enumerate(rows):
        found[name] = next((rows[j][1] for j in range(i + 1, len(rows)) if rows[j][0] < indent), "(top level)")
    return found


def report(title: str, runs: list[list[tuple[int, str, int, int]]]) -> str:
    selfs: dict[str, list[int]] = collections.defaultdict(list)
    cumulative: dict[str, list[int]] = collections.defaultdict(list)
    parent: dict[str, str] = {}
    for rows in runs:
        parent.update(importers(rows))
        for _, name, self_us, cum_us in rows:
            selfs[name].append(self_us)
            cumulative[name].append(cum_us)

    def median(values: list[int]) -> float:
        return statistics.median(values + [0] * (len(runs) - len(values))) / 1000

    total = sum(median(v) for v in selfs.values())
    ours = sum(median(v) for name, v in selfs.items() if name.split(".")[0] == OURS)
    lines = [f"## {title}: {len(selfs)} modules, {total:.1f} ms of import work (median of {len(runs)} runs), "
             f"{ours:.1f} ms in our own modules' bodies", "", "| self ms | cumulative ms | module | imported by |",
             "|---|---|---|---|"]
    for name in sorted(selfs, key=lambda n: -median(selfs[n]))[:TOP]:
        lines.append(f"| {median(selfs[name]):.2f} | {median(cumulative[name]):.2f} | {name} | {parent[name]} |")
    lines += ["", "Modules outside the package that our modules import first (cumulative ms):", ""]
    pulled = [n for n in selfs if n.split(".")[0] != OURS and parent.get(n, "").split(".")[0] == OURS]
    lines += [f"- {name} {median(cumulative[name]):.2f} ← {parent[name]}"
              for name in sorted(pulled, key=lambda n: -median(cumulative[n])) if median(cumulative[name]) >= 0.2]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11, help="processes per path (median; default 11)")
    args = parser.parse_args(argv)
    CLEANUP.install_signal_handlers()
    try:
        ours = ensure_ours()
        use_ours(ours.python)
        print(f"{ours.header()}\n")
        ws = Workspace()
        warm_config = ws.write_config("warm", DEMO_SERVICE, "profile-warm")
        warm_env = env_for(ws.state_dir("warm"))
        timed_run(launcher_argv(warm_config), warm_env)  # launch: the client file now exists
        timed_run(launcher_argv(warm_config), warm_env)  # and the kept parse
        print(report("warm reuse", [importtime(launcher_argv(warm_config), warm_env) for _ in range(args.runs)]))
        cold_config = ws.write_config("cold", TINY_SERVICE, "profile-cold")
        cold_runs = []
        for _ in range(args.runs):
            state = ws.state_dir("cold")
            try:
                cold_runs.append(importtime(launcher_argv(cold_config), env_for(state)))
            finally:
                kill_services_in(state)
                shutil.rmtree(state, ignore_errors=True)
        print()
        print(report("cold local launch (no kept parse)", cold_runs))
    finally:
        CLEANUP.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
