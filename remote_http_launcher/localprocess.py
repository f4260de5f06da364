"""Identity of processes: start time (from /proc, ps or Windows) and command line.

Used wherever a local PID is about to be trusted or signalled (services in
local mode, tunnel keepers): a PID alone may have been reused.
"""

from __future__ import annotations

import os


def start_time_from_stat(stat: bytes) -> str | None:
    """The identity in a `/proc/<pid>/stat` line (read here or over SFTP); None for a zombie."""
    fields = stat.rpartition(b")")[2].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return "proc:" + fields[19].decode()


def process_identity(pid: int) -> str | None:
    """The start time of a live (non-zombie) local process, or None when it is gone."""
    if pid <= 0:
        return None
    if os.name == "nt":
        return _windows_identity(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return start_time_from_stat(handle.read())
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except OSError:
        return None
    out = _ps(pid, "stat=,lstart=")
    return None if out is None or out.startswith("Z") else "ps:" + " ".join(out.split()[1:])


def process_cmdline(pid: int) -> str | None:
    """The command line of a local process (None when unknown: gone, or Windows)."""
    if os.name == "nt":
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except OSError:
        return None
    return _ps(pid, "command=")


def _ps(pid: int, fields: str) -> str | None:
    import subprocess  # only where there is no /proc: the warm path imports this module

    try:
        result = subprocess.run(["ps", "-ww", "-o", fields, "-p", str(pid)], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, check=False)
    except OSError:
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _windows_identity(pid: int) -> str | None:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        code = wintypes.DWORD()
        times = [wintypes.FILETIME() for _ in range(4)]
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value != 259:  # STILL_ACTIVE
            return None
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        return f"win:{times[0].dwHighDateTime}:{times[0].dwLowDateTime}"
    finally:
        kernel32.CloseHandle(handle)
