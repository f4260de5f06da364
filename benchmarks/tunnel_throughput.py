"""Tunnel speed: our keeper's forward vs OpenSSH's `ssh -L` on the same link.

    python benchmarks/tunnel_throughput.py [--mib 200] [--requests 1000] [--rounds 5] [--json] [--python PY]

Needs root: a throwaway user, a real sshd (in its own network namespace when
possible) and the demo service bound to the server's 127.0.0.1 come from
tests/sshd.py. Our column runs the real CLI with `tunnel: true` and measures
through the keeper it leaves; the `ssh -L` column forwards the same service
(skipped when `ssh` is not installed). Both are measured in alternation, so
load from elsewhere hits them alike: bulk is `--rounds` pairs of downloads of
the same size, ours then `ssh -L` (A/B/A/B), and the figure is the median of
the per-pair ratios with their lowest and highest (the ratio of the two best
downloads is reported too: a best-of-N figure favours whichever side had
one lucky round); latency is the median of `--requests` sequential GETs,
each on a new connection. Targets: bulk ≥ 90% of `ssh -L` (median pair),
latency within 2 ms of it. `--python` is the interpreter whose installed
package runs our side (default: this one, with the checkout on PYTHONPATH).

Our tunnel is kept by the destination's connection broker (connection_persist);
`--persist 0` measures a keeper process per tunnel instead.
`--ciphers LIST` sets ~/.ssh/config's `Ciphers` for our side only (e.g.
aes128-ctr, paramiko's default before AES-GCM was preferred); `ssh -L` keeps
OpenSSH's choice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sshd import NetNamespace, SSHAccount, SSHServer, launch_sshd  # noqa: E402 - needs ROOT on sys.path

ALIAS = "bench"
MIN_RATIO = 0.9
MAX_EXTRA_LATENCY = 0.002
CHUNK = 1 << 20


def download(port: int, size: int) -> float:
    """Seconds to GET /bytes?n=size through localhost:port and read every byte."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/bytes?n={size}")
    response = conn.getresponse()
    received = 0
    while chunk := response.read(CHUNK):
        received += len(chunk)
    conn.close()
    elapsed = time.perf_counter() - start
    if received != size:
        raise RuntimeError(f"port {port}: got {received} of {size} bytes")
    return elapsed


def small_get(port: int) -> float:
    """Seconds for one small GET on a new connection, as a simple client does it."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthcheck")
    body = conn.getresponse().read()
    conn.close()
    if body != b"ok\n":
        raise RuntimeError(f"port {port}: unexpected answer {body!r}")
    return time.perf_counter() - start


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    """The server, the client HOME and the two forwards; `close` removes everything."""

    def __init__(self, python: str | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rhl-tunnel-bench-"))
        self.env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "PYTHONPATH")}
        self.env.update(HOME=str(self.tmp / "home"), REMOTE_HTTP_LAUNCHER_DIR=str(self.tmp / "state"))
        if python is None:  # this interpreter: our package from the checkout
            self.env["PYTHONPATH"] = str(ROOT)
        self.python = python or sys.executable
        self.cwd = self.tmp / "cwd"  # not the repository: `-m` would import the checkout from there
        self.cwd.mkdir()
        self.account: SSHAccount | None = None
        self.ns: NetNamespace | None = None
        self.server: SSHServer | None = None
        self.ssh: subprocess.Popen[bytes] | None = None

    def start_server(self, ciphers: str | None = None) -> SSHServer:
        self.account = SSHAccount.create()
        self.ns = NetNamespace.try_create()
        self.server = launch_sshd(self.account, "bench", self.ns)
        self.ssh_config = self.server.write_ssh_config(self.tmp / "home", ALIAS)
        if ciphers:  # ours only: `ssh -L` reads the file without it
            ours = self.tmp / "home" / ".ssh" / "config"
            self.ssh_config = self.tmp / "openssh_config"
            shutil.copy(ours, self.ssh_config)
            ours.write_text(ours.read_text() + f"    Ciphers {ciphers}\n")
        demo = self.server.home / "demo_service.py"
        shutil.copy(ROOT / "examples" / "demo_service.py", demo)
        os.chown(demo, self.account.uid, self.account.gid)
        return self.server

    def ours(self, persist: float) -> tuple[int, int]:
        """(local port of our tunnel, the service's port on the server), via the real CLI."""
        assert self.server is not None
        config = {"workdir": "~/rhl-bench", "hostname": self.server.host, "ssh_hostname": ALIAS, "key": "bench",
                  "connection_persist": persist,
                  "network_interface": "127.0.0.1", "tunnel": True, "handshake": "healthcheck",
                  "command": f"{self.server.python} {self.server.home}/demo_service.py "
                             "--status-file {status_file} --host {network_interface}"}
        path = self.tmp / "bench.yaml"
        path.write_text(json.dumps(config))
        result = subprocess.run([self.python, "-m", "remote_http_launcher", str(path), "--json"], env=self.env,
                                cwd=self.cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"launcher failed: {result.stderr.strip()}")
        payload = json.loads(result.stdout)
        return int(payload["port"]), int(payload["tunneled-port"])

    def openssh(self, remote_port: int) -> int | None:
        """Local port of `ssh -L` to the same service, or None without an ssh binary."""
        ssh = shutil.which("ssh")
        if ssh is None:
            return None
        port = free_port()
        self.ssh = subprocess.Popen([ssh, "-F", str(self.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
                                     "-L", f"127.0.0.1:{port}:127.0.0.1:{remote_port}", ALIAS],
                                    env=self.env, stdin=subprocess.DEVNULL)
        wait_port(port)
        return port

    def close(self) -> None:
        from remote_http_launcher.commands.stop import stop_keeper

        if self.ssh is not None:
            self.ssh.terminate()
            self.ssh.wait(10)
        stop_keeper("bench", self.tmp / "state" / "client")
        subprocess.run([self.python, "-m", "remote_http_launcher", "disconnect"], env=self.env, cwd=self.cwd,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
        if self.server is not None:
            self.server.close()
        if self.ns is not None and self.account is not None:
            self.ns.close(uid=self.account.uid)
        if self.account is not None:
            self.account.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure(ports: dict[str, int], size: int, requests: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Alternate between the forwards so background load affects both columns alike: bulk in pairs
    (A/B/A/B, same size), latency in blocks."""
    results: dict[str, dict[str, Any]] = {name: {"bulk": [], "latency": []} for name in ports}
    for port in ports.values():  # warm-up: channel setup, caches
        download(port, 10 * CHUNK)
        small_get(port)
    for _ in range(rounds):
        for name, port in ports.items():
            results[name]["bulk"].append(size / download(port, size))
    block = max(1, requests // 10)
    for _ in range(0, requests, block):
        for name, port in ports.items():
            results[name]["latency"] += [small_get(port) for _ in range(block)]
    numbers: dict[str, dict[str, Any]] = {
        name: {"bulk_mb_s": max(r["bulk"]) / 1e6, "bulk_median_mb_s": statistics.median(r["bulk"]) / 1e6,
               "bulk_all_mb_s": [b / 1e6 for b in r["bulk"]],
               "latency_ms": statistics.median(r["latency"]) * 1e3,
               "latency_p95_ms": sorted(r["latency"])[int(0.95 * len(r["latency"]))] * 1e3}
        for name, r in results.items()}
    if "ssh -L" in results:
        ours = numbers["ours"]
        ours["pair_ratios"] = [a / b for a, b in zip(results["ours"]["bulk"], results["ssh -L"]["bulk"], strict=True)]
        ours["best_ratio"] = ours["bulk_mb_s"] / numbers["ssh -L"]["bulk_mb_s"]
    return numbers


def table(numbers: dict[str, dict[str, Any]], size: int, requests: int) -> str:
    ours, theirs = numbers["ours"], numbers.get("ssh -L")
    lines = ["| metric | our tunnel | ssh -L | target | pass/miss |", "|---|---|---|---|---|"]

    def row(metric: str, field: str, unit: str, target: str, ok: Callable[[float, float], bool]) -> None:
        other = f"{theirs[field]:.1f} {unit}" if theirs else "skipped (no ssh)"
        verdict = ("pass" if ok(ours[field], theirs[field]) else "MISS") if theirs else ""
        lines.append(f"| {metric} | {ours[field]:.1f} {unit} | {other} | {target} | {verdict} |")

    row(f"bulk download, {size / 2**20:.0f} MiB (best)", "bulk_mb_s", "MB/s", "", lambda a, b: True)
    row(f"small GET, new connection (median of {requests})", "latency_ms", "ms",
        f"≤ ssh -L + {MAX_EXTRA_LATENCY * 1e3:g} ms", lambda a, b: a <= b + MAX_EXTRA_LATENCY * 1e3)
    row("small GET p95", "latency_p95_ms", "ms", "", lambda a, b: True)
    if theirs:
        pairs = ours["pair_ratios"]
        verdict = "pass" if statistics.median(pairs) >= MIN_RATIO else "MISS"
        lines.append(f"| bulk, ours / ssh -L per A/B pair (median, lowest–highest of {len(pairs)}) | "
                     f"{statistics.median(pairs):.0%} ({min(pairs):.0%}–{max(pairs):.0%}) |  | "
                     f"≥ {MIN_RATIO:.0%} | {verdict} |")
        lines.append(f"\nbest against best: {ours['best_ratio']:.0%} of ssh -L; "
                     f"latency difference: {ours['latency_ms'] - theirs['latency_ms']:+.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200, help="bulk download size in MiB (default 200)")
    parser.add_argument("--requests", type=int, default=1000, help="sequential small GETs (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="A/B pairs of bulk downloads (default 5)")
    parser.add_argument("--python", help="interpreter whose installed package runs our side (default: this one, "
                                          "with the checkout on PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--ciphers", help="~/.ssh/config Ciphers for our tunnel (default: AES-GCM first)")
    parser.add_argument("--persist", type=float, default=600.0,
                        help="connection_persist of our tunnel (default 600: the broker; 0: a keeper process)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tunnel_throughput: needs root (a throwaway user and a real sshd from tests/sshd.py)", file=sys.stderr)
        return 2
    bench = Bench(args.python)
    try:
        server = bench.start_server(args.ciphers)
        ours, remote_port = bench.ours(args.persist)
        ports = {"ours": ours}
        theirs = bench.openssh(remote_port)
        if theirs is not None:
            ports["ssh -L"] = theirs
        numbers = measure(ports, args.mib * 2**20, args.requests, args.rounds)
    finally:
        bench.close()
    link = f"sshd in network namespace {server.netns}" if server.netns else "sshd on 127.0.0.1"
    if args.json:
        print(json.dumps({"link": link, "bulk_bytes": args.mib * 2**20, "requests": args.requests,
                          "rounds": args.rounds, "python": bench.python, "results": numbers}, indent=2))
    else:
        print(f"Tunnel throughput ({link})\n\n{table(numbers, args.mib * 2**20, args.requests)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
