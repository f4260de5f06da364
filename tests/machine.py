"""The machine lock of the test clusters: /etc/hosts, /etc/slurm and Grid Engine's cell are machine-wide, so
one cluster at a time runs on a machine (other test runs' clusters wait for it)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

MACHINE_LOCK = Path(tempfile.gettempdir()) / "rhl-test-cluster.lock"  # shared by every cluster a test run starts


def machine_lock() -> IO[bytes]:
    """Wait for any other test run's cluster on this machine to end; held until the handle is closed."""
    import fcntl
    handle = open(MACHINE_LOCK, "ab")  # noqa: SIM115 - held until the cluster is closed
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
