#!/usr/bin/env python3
"""A tiny HTTP service that follows remote-http-launcher's status-file protocol.

Standard library only, so it runs on any server with python3. It reads the
status file, binds a free port, then rewrites the file with
"status": "running" and "port". Tests and benchmarks use its extra options to
misbehave on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CHUNK = 1 << 16


def update_status(path: str, **fields: object) -> None:
    """Read, update and atomically replace the status file, keeping the launcher's fields."""
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    state.update(fields)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)


def bind(host: str, start: int, end: int,
         handler: type[socketserver.BaseRequestHandler] | None = None) -> ThreadingHTTPServer:
    for port in range(start, end + 1):
        try:
            return ThreadingHTTPServer((host, port), handler or Handler)
        except OSError:
            continue
    raise OSError(f"no free port in {start}-{end} on {host}")


class NoHTTP(socketserver.BaseRequestHandler):
    """A port that is not HTTP (like a dask scheduler's): a line of text, then the connection closes."""

    def handle(self) -> None:
        self.request.sendall(b"this port speaks no HTTP; see dashboard_port\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    healthcheck = "/healthcheck"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == self.healthcheck:
            self._send(b"ok\n")
        elif url.path == "/bytes":
            size = int(parse_qs(url.query).get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * CHUNK
            while size > 0:
                self.wfile.write(block[: min(size, CHUNK)])
                size -= CHUNK
        elif url.path == "/":
            self._send(json.dumps({"service": "demo", "pid": os.getpid()}).encode() + b"\n")
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port-range", nargs=2, type=int, default=[0, 0], metavar=("START", "END"),
                        help="ports to try (default: any free port)")
    parser.add_argument("--ready-delay", type=float, default=0.0, help="seconds to wait before binding")
    parser.add_argument("--label", default="", help="ignored: lets a command carry any value (tests of quoting)")
    parser.add_argument("--fail", action="store_true", help="report status 'failed' instead of starting")
    parser.add_argument("--extra-port", action="append", default=[], metavar="NAME",
                        help="also open a listener and report it as NAME (e.g. admin_port)")
    parser.add_argument("--ignore-sigterm", action="store_true", help="keep running on SIGTERM")
    parser.add_argument("--dashboard", action="store_true",
                        help="like a dask scheduler: the main port speaks no HTTP, and the HTTP endpoints are "
                             "on a second port reported as dashboard_port")
    parser.add_argument("--report-port", type=int, default=0, metavar="PORT",
                        help="report PORT (e.g. sshd's 22) instead of the port it listens on")
    args = parser.parse_args()

    print(f"demo service starting, pid {os.getpid()}, status file {args.status_file}", flush=True)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(args.ready_delay)
    if args.fail:
        print("demo service: failing on purpose", flush=True)
        update_status(args.status_file, status="failed")
        sys.exit(1)
    start, end = args.port_range
    server = bind(args.host, start, end, handler=NoHTTP if args.dashboard else Handler)
    extras = {}
    listeners = []
    if args.dashboard:
        dashboard = bind(args.host, 0, 0)
        listeners.append(dashboard)
        extras["dashboard_port"] = dashboard.server_address[1]
    for name in args.extra_port:
        extra = bind(args.host, 0, 0)
        listeners.append(extra)
        extras[name] = extra.server_address[1]
    port = server.server_address[1]
    update_status(args.status_file, status="running", port=args.report_port or port, **extras)
    print(f"demo service listening on {args.host}:{port}", flush=True)
    for extra in listeners:
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
