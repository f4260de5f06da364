"""The client side of the SSH tests: what a test (as the client) names, writes and cleans up on the test server.

tests/sshd.py runs the servers; this module holds what the SSH test modules
share on top of them: the ~/.ssh/config alias, the demo-service configs, the
service keys and the server-side cleanup script. Its fixtures (a client HOME,
the demo service on the server, ~/.ssh/config) are in tests/conftest.py.

It does not import pytest, so the benchmarks can use it too.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.sshd import SSHServer

ALIAS = "testhost"  # the server's Host entry in the client's ~/.ssh/config
REMOTE_STATE = ".remote-http-launcher/server"  # the launcher's state directory, relative to the server user's home
#: A ProxyCommand (`python relay.py HOST PORT`): relays its stdin and stdout to a TCP connection, as `nc` would.
RELAY = '''import socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def pump():
    while data := sock.recv(65536):
        sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
threading.Thread(target=pump, daemon=True).start()
while data := sys.stdin.buffer.read1(65536):
    sock.sendall(data)
'''


def stop_services_script(then: str) -> str:
    """A shell script for the server user: kill every service the launcher started there (by the PIDs
    in its status files, process group and process), then run `then` (e.g. an `rm` of the state)."""
    return r"""
for f in "$HOME/.remote-http-launcher/server/"*.json; do
  [ -f "$f" ] || continue
  pid=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "$f")
  [ -n "$pid" ] && { kill -s KILL -- "-$pid" 2>/dev/null; kill -s KILL "$pid" 2>/dev/null; }
done
""" + then + "\nexit 0\n"


def node_key(prefix: str, node_name: str) -> str:
    """A service key of its own for a test: the prefix and the test's name, made key-safe and short."""
    return prefix + re.sub(r"[^A-Za-z0-9._-]", "-", node_name)[:80]


def demo_config(server: SSHServer, remote_demo: str, key: str, /, *, args: str = "", **fields: Any) -> dict[str, Any]:
    """A config of the demo service at `remote_demo` on `server`; keyword arguments override fields.

    Direct mode: `hostname` is the server's address (what this machine
    connects to), `ssh_hostname` the ~/.ssh/config alias.
    """
    config: dict[str, Any] = {
        "workdir": "~/rhl-work",
        "hostname": server.host,
        "ssh_hostname": ALIAS,
        "network_interface": "0.0.0.0",
        "key": key,
        "command": f"{server.python} {remote_demo} --status-file {{status_file}} "
                   f"--host {{network_interface}} {args}",
        "handshake": "healthcheck",
    }
    config.update(fields)
    return config


def remote_state(server: SSHServer, key: str) -> dict[str, Any] | None:
    """The key's status file on the server, or None when there is none."""
    result = server.run(f"cat {REMOTE_STATE}/{key}.json")
    return json.loads(result.stdout) if result.returncode == 0 else None
