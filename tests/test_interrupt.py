"""Ctrl-C while the tunnel keeper starts ends the run promptly, and the keeper with it.

The caller waits for the keeper on a queue, never in a pipe read (which on Windows does not see
Ctrl-C until the read returns). Here the keeper waits for a service that takes its time, and the
command gets SIGINT, as a terminal's Ctrl-C sends it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from remote_http_launcher.broker.registry import live_brokers
from tests.remote import RemoteConfig, keeper_processes
from tests.ssh_client import remote_state

if TYPE_CHECKING:
    from tests.sshd import SSHServer

PROMPTLY = 5.0  # seconds from Ctrl-C to the command's exit, keeper included



def test_ctrl_c_while_the_keeper_starts(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                        tmp_path: Path) -> None:
    config = remote_config(keyed_server, tunnel=True, args="--ready-delay 30", connection_persist=0)  # a keeper
    key = config["key"]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    command = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(path), "--log-level", "basic"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    log = rhl_dir / "client" / f"{key}.keeper.log"
    while not (log.exists() and "waiting for the service to report its port" in log.read_text()):
        assert time.monotonic() < deadline and command.poll() is None, "the keeper never got to wait"
        time.sleep(0.05)
    assert keeper_processes(key)  # the keeper is there, waiting for the service
    interrupted = time.monotonic()
    command.send_signal(signal.SIGINT)
    _, stderr = command.communicate(timeout=PROMPTLY + 5)
    assert time.monotonic() - interrupted < PROMPTLY
    assert command.returncode == 130 and stderr.rstrip().endswith("error: interrupted")
    for _ in range(50):  # the keeper got SIGTERM and cleans up on its way out
        if not keeper_processes(key):
            break
        time.sleep(0.1)
    assert keeper_processes(key) == []
    assert not (rhl_dir / "client" / f"{key}.keeper.lock").exists()
    assert not (rhl_dir / "client" / f"{key}.json").exists()


def test_ctrl_c_while_the_broker_opens_a_tunnel(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                rhl_dir: Path, tmp_path: Path) -> None:
    """With a connection broker the run waits in this process; the broker drops the key it claimed."""
    config = remote_config(keyed_server, tunnel=True, args="--ready-delay 30")
    key = config["key"]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    command = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(path), "--log-level", "basic"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = rhl_dir / "client" / f"{key}.keeper.lock"
    deadline = time.monotonic() + 30
    while not lock.exists():  # the broker claimed the key; the run waits for the service
        assert time.monotonic() < deadline and command.poll() is None, "the broker never claimed the key"
        time.sleep(0.05)
    while not (remote_state(keyed_server, key) or {}).get("pid"):  # it launched the service
        assert time.monotonic() < deadline and command.poll() is None, "the service was never launched"
        time.sleep(0.05)
    time.sleep(0.3)
    interrupted = time.monotonic()
    command.send_signal(signal.SIGINT)
    _, stderr = command.communicate(timeout=PROMPTLY + 5)
    assert time.monotonic() - interrupted < PROMPTLY
    assert command.returncode == 130
    # The run launched the service (it waits for it here): the last line says it keeps starting, and how to end it
    assert re.fullmatch(r"error: interrupted; the service keeps starting on \S+ \(pid \d+\): 'remote-http-launcher "
                        r"CONFIG' picks it up again, 'remote-http-launcher stop CONFIG' ends it",
                        stderr.rstrip().splitlines()[-1]), stderr
    for _ in range(50):  # the broker saw the run's connection end
        if not lock.exists():
            break
        time.sleep(0.1)
    assert not lock.exists() and not (rhl_dir / "client" / f"{key}.json").exists()
    assert [owner.pid for _files, owner in live_brokers(rhl_dir / "brokers")]  # still there for the next run
