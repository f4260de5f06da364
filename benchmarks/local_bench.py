"""Local metrics: interpreter start, warm reuse (+ import profile), cold launch overhead, concurrency.

Warm reuse and cold launch are also measured for the original implementation,
PyPI remote-http-launcher==0.2.0 (benchmarks/original.py), interleaved with
ours in the same rounds, with the same config file, service and environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    CLEANUP,
    PYTHON,
    ROOT,
    TINY_SERVICE,
    Row,
    base_env,
    kill_processes_under,
    kill_services_in,
    launcher_argv,
    log,
    ours_python,
    pids_with_cmdline,
    ratio,
    reference,
    run_cwd,
    timed_run,
    write_config,
)
from .installs import probe_import
from .original import ORIGINAL_VERSION, Original

DEMO_SERVICE = ROOT / "examples" / "demo_service.py"
WARM_VS_ORIGINAL_TARGET = 0.35  # ours ≤ 0.35 × the original's warm reuse
COLD_VS_PASS_TARGET = 3.0  # our cold launch overhead ≤ 3 × `python -c pass`
ORIGINAL = f"original {ORIGINAL_VERSION}"
CONCURRENT_RUNS = 20
# Must not be imported when the client file is reused.
HEAVY_MODULES = ("paramiko", "sshtunnel", "requests", "http.client", "cryptography", "nacl", "bcrypt", "urllib3",
                 "http.server", "asyncio", "remote_http_launcher.hosts.ssh", "remote_http_launcher.ssh",
                 "remote_http_launcher.tunnels.forward")
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


class Workspace:
    """A private REMOTE_HTTP_LAUNCHER_DIR per scenario; every service started in it is killed at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rhlbench-"))
        CLEANUP.push(f"local workspace {self.root}", self.close)
        self.count = 0

    def state_dir(self, name: str) -> Path:
        self.count += 1
        return self.root / f"{name}-{self.count}"

    def write_config(self, name: str, service: Path, key: str, extra_args: str = "",
                     network_interface: str | None = None) -> Path:
        """A config file; give `network_interface` when the original 0.2.0 reads it too (its
        `{network_interface}` template variable exists only when the config sets it)."""
        workdir = self.root / "work"
        workdir.mkdir(exist_ok=True)
        command = (f"{shlex.quote(ours_python())} {shlex.quote(str(service))} --status-file {{status_file}} "
                   f"--host {{network_interface}} {extra_args}").strip()
        path = self.root / f"{name}.yaml"
        data = {"workdir": str(workdir), "key": key, "command": command, "handshake": "healthcheck"}
        if network_interface is not None:
            data["network_interface"] = network_interface
        write_config(path, data)
        return path

    def home(self, name: str) -> Path:
        """A private $HOME for the original 0.2.0 (its state goes to ~/.remote-http-launcher)."""
        home = self.state_dir(name)
        home.mkdir(parents=True)
        return home

    def close(self) -> None:
        for state in self.root.iterdir():
            if state.is_dir():
                kill_services_in(state)
                kill_services_in(Original.state_dir(state))  # an original 0.2.0 $HOME
        kill_processes_under(self.root)  # whatever lost its status record
        shutil.rmtree(self.root, ignore_errors=True)


def env_for(state_dir: Path) -> dict[str, str]:
    return base_env(REMOTE_HTTP_LAUNCHER_DIR=str(state_dir))


Variant = tuple[list[str], dict[str, str], str | None]  # argv, environment, working directory (None: run_cwd())


def warm_reuse(ws: Workspace, runs: int, original: Original | str) -> tuple[list[Row], dict[str, Any]]:
    """`python -c pass`, our installed warm path, the same from this checkout (the repository as the
    working directory), and the original 0.2.0's warm path, interleaved so load hits them alike."""
    config = ws.write_config("warm", DEMO_SERVICE, "bench-warm", network_interface="localhost")
    env = env_for(ws.state_dir("warm"))
    timed_run(launcher_argv(config), env)  # cold launch: the client file now exists
    variants: dict[str, Variant] = {"pass": ([ours_python(), "-c", "pass"], base_env(), None),
                                    "warm": (launcher_argv(config), env, None),
                                    "checkout": ([PYTHON, "-m", "remote_http_launcher", str(config)], env,
                                                 str(ROOT))}
    original_note = original if isinstance(original, str) else ""
    if isinstance(original, Original):
        try:
            variants["original"] = _original_warm_variant(ws, original, config)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            original_note = f"{ORIGINAL} failed: {exc}"[:300]
            log(original_note)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(runs + 2):  # two warm-up rounds: page cache
        for name, (argv, variant_env, cwd) in list(variants.items()):
            try:
                elapsed = timed_run(argv, variant_env, cwd=cwd)[0]
            except (RuntimeError, subprocess.SubprocessError) as exc:
                if name != "original":
                    raise
                original_note = f"{ORIGINAL} failed: {exc}"[:300]
                log(original_note)
                del variants[name]
                samples.pop(name)
                continue
            if round_ >= 2:
                samples[name].append(elapsed)
    # After the rounds: what each measured command line imported, from where (bytecode or source).
    imported = {name: probe_import(argv, variant_env, cwd) for name, (argv, variant_env, cwd) in variants.items()
                if name != "pass"}
    rows = [
        reference("`python -c pass` (interpreter start, the venv our launcher runs in; reference)", samples["pass"]),
        reference("warm reuse: client file present, service healthy", samples["warm"],
                  _loaded("ours, installed", imported["warm"])),
        reference("warm reuse from this checkout (cwd = repository root; reference)", samples["checkout"],
                  _loaded("source tree", imported["checkout"])),
    ]
    rows += _warm_comparison(samples, original_note, imported.get("original"))

    profiles = [import_profile(config, env) for _ in range(3)]
    ours = statistics.median(p["remote_http_launcher_us"] for p in profiles)
    yaml_us = statistics.median(p["yaml_us"] for p in profiles)
    total = statistics.median(p["total_us"] for p in profiles)
    heavy = sorted({name for p in profiles for name in p["heavy"]})
    rows += [
        Row("warm path imports: remote_http_launcher (cumulative, -X importtime)", ours, "µs"),
        Row("warm path imports: yaml (cumulative)", yaml_us, "µs"),
        Row("warm path imports: everything (sum of top-level cumulative)", total, "µs"),
        Row("warm path heavy modules imported (paramiko, sshtunnel, requests, http.client, ...)",
            ", ".join(heavy) or "none", "", "none", not heavy),
    ]
    return rows, {"warm_import_profile": profiles[0], "warm_imported_from": imported}


def _loaded(what: str, probe: dict[str, Any]) -> str:
    """Where a measured command's package code came from (python -v of the same command line)."""
    kind = "bytecode" if probe["bytecode"] else "compiled from source"
    return f"{what}: {probe['code_from']}, {kind}{', editable finder' if probe['editable_finder'] else ''}"


def _original_warm_variant(ws: Workspace, original: Original, config: Path) -> Variant:
    """Launch the demo service with the original once (its client file then exists) and check that a
    second run really takes its warm path ("done: reused-local"), not a relaunch."""
    home = ws.home("original-warm")
    argv, env = original.argv(config), original.env(home)
    timed_run(argv, env)
    client_file = Original.state_dir(home) / "client" / "bench-warm.json"
    if not client_file.exists():
        raise RuntimeError(f"no client file {client_file} after its launch")
    out = timed_run(argv, env)[1].stderr.decode(errors="replace")
    if "reused-local" not in out:
        raise RuntimeError(f"second run did not reuse the client file: {out.strip()[-300:]}")
    return argv, env, None


def _warm_comparison(samples: dict[str, list[float]], note: str, imported: dict[str, Any] | None) -> list[Row]:
    label = f"warm reuse, {ORIGINAL} (same config, service and timing; reference)"
    ratio_label = f"warm reuse, ours / {ORIGINAL} (ratio of medians)"
    if "original" not in samples:
        return [Row(label, None, note=note or "not measured"),
                Row(ratio_label, None, "×", f"≤ {WARM_VS_ORIGINAL_TARGET:g}×", None, note or "not measured",
                    limit=WARM_VS_ORIGINAL_TARGET)]
    ours, theirs = statistics.median(samples["warm"]), statistics.median(samples["original"])
    loaded = _loaded(ORIGINAL, imported) if imported else ""
    return [reference(label, samples["original"], loaded),
            ratio(ratio_label, ours / theirs, WARM_VS_ORIGINAL_TARGET, f"{ours:.3f} s / {theirs:.3f} s")]


def import_profile(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """Parse `python -X importtime` of one warm run: our package, yaml, the total, and any heavy module."""
    argv = launcher_argv(config)
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=run_cwd(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=True)
    ours = yaml_us = total = 0
    roots: dict[str, int] = {}
    modules: list[tuple[str, int, int, int]] = []
    for line in proc.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        self_us, cumulative, indent, name = int(match[1]), int(match[2]), len(match[3]), match[4]
        modules.append((name, self_us, cumulative, indent))
        if indent == 1:  # top level (importtime indents nested imports by two more spaces)
            total += cumulative
            root = name.split(".")[0]
            roots[root] = roots.get(root, 0) + cumulative
            if name == "remote_http_launcher" or name.startswith("remote_http_launcher."):
                ours += cumulative
            if name == "yaml":
                yaml_us += cumulative
    names = {name for name, *_ in modules}
    heavy = sorted(name for name in names if any(name == h or name.startswith(h + ".") for h in HEAVY_MODULES))
    slowest = sorted(modules, key=lambda m: -m[1])[:12]
    return {"remote_http_launcher_us": ours, "yaml_us": yaml_us, "total_us": total, "heavy": heavy,
            "modules": len(modules), "slowest_self_us": [(n, s) for n, s, _, _ in slowest], "top_level_us": roots}


def service_startup(service: Path, runs: int) -> list[float]:
    """The service's own start-up: from spawning it to its status file saying 'running'."""
    samples = []
    tmp = Path(tempfile.mkdtemp(prefix="rhlbench-svc-"))
    try:
        for i in range(runs + 1):
            status = tmp / f"s{i}.json"
            status.write_text('{"status": "starting"}')
            before = status.stat().st_mtime_ns
            start = time.perf_counter()
            proc = subprocess.Popen([ours_python(), str(service), "--status-file", str(status), "--host", "localhost"],
                                    env=base_env(), cwd=run_cwd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                deadline = start + 30
                while time.perf_counter() < deadline:
                    try:
                        if status.stat().st_mtime_ns != before and b"running" in status.read_bytes():
                            break
                    except OSError:
                        pass
                    time.sleep(0.0005)
                else:
                    raise RuntimeError(f"{service.name} did not report 'running' within 30 s")
                samples.append(time.perf_counter() - start)
            finally:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return samples[1:]


def cold_launch(ws: Workspace, runs: int, original: Original | str) -> tuple[list[Row], dict[str, Any]]:
    """Rounds of `python -c pass`, our cold launch and the original 0.2.0's, each launch with fresh state;
    the first round is warm-up."""
    config = ws.write_config("cold", TINY_SERVICE, "bench-cold", network_interface="localhost")
    own = service_startup(TINY_SERVICE, runs)
    samples: list[float] = []
    phases: list[str] = []
    pass_samples: list[float] = []
    original_samples: list[float] = []
    original_phases: list[str] = []
    original_note = original if isinstance(original, str) else ""
    use_original = isinstance(original, Original)
    for i in range(runs + 1):
        elapsed = timed_run([ours_python(), "-c", "pass"], base_env())[0]
        if i:
            pass_samples.append(elapsed)
        state = ws.state_dir("cold")
        try:
            elapsed, proc = timed_run(launcher_argv(config, "--log-level", "basic"), env_for(state))
        finally:
            kill_services_in(state)
        if i:
            samples.append(elapsed)
            phases.append(proc.stderr.decode(errors="replace"))
        if use_original:
            assert isinstance(original, Original)
            home = ws.home("original-cold")
            try:
                elapsed, proc = timed_run(original.argv(config, "--log-level", "basic"), original.env(home))
                out = proc.stderr.decode(errors="replace")
                if "done: launched" not in out:
                    raise RuntimeError(f"did not launch: {out.strip()[-300:]}")
            except (RuntimeError, subprocess.SubprocessError) as exc:
                original_note = f"{ORIGINAL} failed: {exc}"[:300]
                log(original_note)
                use_original = False
                original_samples.clear()
            else:
                if i:
                    original_samples.append(elapsed)
                    original_phases.append(out)
            finally:
                kill_services_in(Original.state_dir(home))
                kill_processes_under(home)
    own_median = statistics.median(own)
    overhead = [s - own_median for s in samples]
    rows = [
        reference("tiny service's own start-up (spawn → status 'running', run directly)", own),
        reference("cold local launch, whole process (tiny service)", samples),
        reference("cold local launch overhead (launch − service's own start-up)", overhead),
    ]
    pass_median = statistics.median(pass_samples)
    pass_ratio = statistics.median(overhead) / pass_median
    ratio_note = f"{statistics.median(overhead):.3f} s / {pass_median:.3f} s, `python -c pass` in the same rounds"
    if original_samples:
        original_overhead = [s - own_median for s in original_samples]
        rows += [
            reference(f"cold local launch, whole process, {ORIGINAL} (tiny service; reference)", original_samples),
            reference(f"cold local launch overhead, {ORIGINAL} (launch − service's own start-up; reference)",
                      original_overhead),
        ]
        ratio_note += f"; {ORIGINAL}: {statistics.median(original_overhead) / pass_median:.1f}×"
    else:
        rows.append(Row(f"cold local launch overhead, {ORIGINAL} (reference)", None,
                        note=original_note or "not measured"))
    rows.append(ratio("cold local launch overhead / `python -c pass`", pass_ratio, COLD_VS_PASS_TARGET, ratio_note,
                      samples=overhead, of="`python -c pass`"))
    extra: dict[str, Any] = {"cold_local_phases": phases[len(phases) // 2], "cold_python_pass": pass_samples}
    if original_phases:
        extra["cold_local_phases_original"] = original_phases[len(original_phases) // 2]
    return rows, extra


def concurrency(ws: Workspace, rounds: int = 3) -> tuple[list[Row], dict[str, Any]]:
    config = ws.write_config("concurrent", TINY_SERVICE, "bench-concurrent")
    walls, started, distinct, failures = [], [], [], []
    for _ in range(rounds):
        state = ws.state_dir("concurrent")
        env = env_for(state)
        status_file = state / "server" / "bench-concurrent.json"
        try:
            start = time.perf_counter()
            procs = [subprocess.Popen(launcher_argv(config, "--json"), env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(CONCURRENT_RUNS)]
            outputs = [p.communicate(timeout=120) for p in procs]
            walls.append(time.perf_counter() - start)
            ports = set()
            for proc, (out, err) in zip(procs, outputs, strict=True):
                if proc.returncode != 0:
                    failures.append(err.decode(errors="replace").strip()[-300:])
                    continue
                ports.add(json.loads(out)["port"])
            time.sleep(0.1)  # let the launch shells exec the service
            # One launch = one new session (setsid); the service may be `sh` plus its child.
            sessions = {_sid(pid) for pid in pids_with_cmdline(str(status_file))} - {None}
            started.append(len(sessions))
            distinct.append(len(ports))
        finally:
            kill_services_in(state)
    one = all(n == 1 for n in started) and all(n == 1 for n in distinct) and not failures
    rows = [
        reference(f"{CONCURRENT_RUNS} simultaneous runs, same key: total wall time", walls),
        Row(f"{CONCURRENT_RUNS} simultaneous runs: services started / distinct ports reported / failed runs",
            f"{max(started)} / {max(distinct)} / {len(failures)}", "", "1 / 1 / 0", one,
            f"sessions of processes with the status file in their cmdline, over {rounds} rounds"),
    ]
    return rows, {"concurrency_failures": failures[:5]}


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def run_local(runs: int, only: set[str], original: Original | str) -> tuple[list[Row], dict[str, Any]]:
    ws = Workspace()
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    if "warm" in only:
        log("python startup and warm reuse" + (f" (and {ORIGINAL}'s)" if isinstance(original, Original) else ""))
        got, more = warm_reuse(ws, runs, original)
        rows += got
        extra.update(more)
    if "cold" in only:
        log("cold local launch" + (f" (and {ORIGINAL}'s)" if isinstance(original, Original) else ""))
        got, more = cold_launch(ws, runs, original)
        rows += got
        extra.update(more)
    if "concurrency" in only:
        log(f"{CONCURRENT_RUNS} concurrent runs")
        got, more = concurrency(ws)
        rows += got
        extra.update(more)
    return rows, extra
