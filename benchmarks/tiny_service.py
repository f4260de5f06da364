"""A service that is ready the moment it starts: the smallest status-file protocol speaker.

Standard library only and as few imports as possible, so the benchmark can
subtract its own start-up time from the launcher's. Usage:

    python3 tiny_service.py --status-file FILE [--host HOST] [--port-range START END]

Answers every GET with `200 ok`, one connection at a time (handshakes are tiny).
"""

import json
import os
import socket
import sys


def main(argv: list[str]) -> None:
    args = {"--host": "localhost"}
    port_range = ("0", "0")
    i = 0
    while i < len(argv):
        if argv[i] == "--port-range":
            port_range = (argv[i + 1], argv[i + 2])
            i += 3
        else:
            args[argv[i]] = argv[i + 1]
            i += 2
    status = args["--status-file"]
    start, end = (int(p) for p in port_range)
    sock = None
    for port in range(start, end + 1):
        try:
            sock = socket.create_server((args["--host"], port), backlog=128, reuse_port=False)
            break
        except OSError:
            continue
    if sock is None:
        raise SystemExit(f"no free port in {start}-{end}")
    with open(status, encoding="utf-8") as handle:
        state = json.load(handle)
    state.update(status="running", port=sock.getsockname()[1])
    tmp = f"{status}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(tmp, status)
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    while True:
        conn, _ = sock.accept()
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            if head:
                conn.sendall(body)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
