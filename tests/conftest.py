"""Shared fixtures: an isolated state directory and configs for the demo service."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.sshd"]

ROOT = Path(__file__).resolve().parent.parent
DEMO_SERVICE = ROOT / "examples" / "demo_service.py"


def kill_services(state_dir: Path) -> None:
    """Stop every service a test left behind (by the PIDs in its server status files)."""
    for status in state_dir.glob("server/*.json"):
        try:
            pid = json.loads(status.read_text()).get("pid")
            if isinstance(pid, int):
                os.killpg(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass


@pytest.fixture
def rhl_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """REMOTE_HTTP_LAUNCHER_DIR for one test; services left running are killed afterwards."""
    state = tmp_path / "rhl-state"
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(state))
    yield state
    kill_services(state)


@pytest.fixture
def demo_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A factory of local demo-service configs; keyword arguments override fields."""

    def make(*, args: str = "", **fields: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "workdir": str(tmp_path / "work dir"),
            "key": "demo-{network_interface}",
            "command": f"{sys.executable} {DEMO_SERVICE} --status-file {{status_file}} "
                       f"--host {{network_interface}} {args}",
            "handshake": "healthcheck",
        }
        config.update(fields)
        return config

    return make
