"""Processes on this machine: identity, command line and signals, on POSIX and Windows.

Every local liveness check and every local signal goes through here. A PID
alone may have been reused, so a process is known by its start time (from
/proc, ps, or Windows' process times). On Windows `os.kill(pid, 0)` is no
liveness check (signal 0 is CTRL_C_EVENT there, sent to a whole console), so
Windows gets its own branch: OpenProcess, GetExitCodeProcess, GetProcessTimes
and TerminateProcess through ctypes (`kernel32()` is the seam tests replace),
and a process's account by its token's user SID (`advapi32()`).
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from typing import Any

STILL_ACTIVE = 259  # GetExitCodeProcess of a running process
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
PROCESS_TERMINATE = 0x0001
TERMINATED_EXIT_CODE = 1
TOKEN_QUERY = 0x0008
TOKEN_USER = 1  # GetTokenInformation's class for the token's user account (a TOKEN_USER: its SID first)
#: accept() failing for want of a file descriptor (or memory for one): wait for some to free, then go on
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FD_LIMIT_FALLBACK = 10240  # macOS: a hard limit of "unlimited" cannot be the soft limit; OPEN_MAX can
FD_SHARE = 4  # one kind of connection (a broker's commands, one forwarded port's) takes at most 1/4 of the limit
#: What a host that can tell only that a PID lives (an rhl-guard server: rhl-pid-alive) gives as its start time.
UNIDENTIFIED = "alive:unidentified"


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
    if sys.platform == "win32":
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


def owned_identity(pid: int) -> str | None:
    """Like `process_identity`, but None too for a process of another user (not ours to signal)."""
    if sys.platform != "win32" and pid > 0:
        try:
            os.kill(pid, 0)  # POSIX only: permission to signal = same user (or root)
        except (ProcessLookupError, PermissionError):
            return None
    return process_identity(pid)


def own_uid() -> int | None:
    """The user this process runs as (effective UID); None where there are no UIDs (Windows)."""
    geteuid = getattr(os, "geteuid", None)  # a feature check: the POSIX-stripped test run lacks it too
    return int(geteuid()) if geteuid is not None and sys.platform != "win32" else None


def process_uid(pid: int) -> int | None:
    """The user a local process runs as (its effective UID); None when unknown: gone, or Windows."""
    if sys.platform == "win32":
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[2])
        return None
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    out = _ps(pid, "uid=")
    return int(out) if out is not None and out.isdigit() else None


def process_cmdline(pid: int) -> str | None:
    """The command line of a local process (None when unknown: gone, or Windows)."""
    if sys.platform == "win32":
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


def raise_fd_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit (a daemon holding many sockets
    must not stop at a shell's default, 256 on macOS); the soft limit now, None where there is none
    (Windows: sockets are handles, not bounded this way)."""
    if sys.platform == "win32":
        return None
    try:
        import resource
    except ImportError:  # a Python without it (the POSIX-stripped test run stands for Windows so)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    for wanted in (hard, FD_LIMIT_FALLBACK) if hard == unlimited else (hard,):
        if soft != unlimited and (wanted == unlimited or wanted > soft):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                continue
            soft = wanted
            break
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(most: int) -> int:
    """How many connections of one kind a daemon accepts at once: `most`, or fewer where the limit on open
    files is low, so that one kind cannot take the descriptors all others need."""
    if sys.platform == "win32":
        return most
    try:
        import resource
    except ImportError:  # a Python without it (the POSIX-stripped test run stands for Windows so)
        return most
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return most if soft == resource.RLIM_INFINITY else max(1, min(most, int(soft) // FD_SHARE))


def terminate(pid: int, *, force: bool = False) -> bool:
    """Ask a process to end (SIGTERM, then SIGCONT), or with `force` end it (SIGKILL). Windows has no request to end:
    both are TerminateProcess there.

    Only for a process whose identity the caller has just checked. False when it was already gone.
    """
    if sys.platform == "win32":
        return _windows_terminate(pid)
    import signal  # only to signal: a first launch does not

    try:
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM) if force else signal.SIGTERM)
        if not force:  # a stopped process (SIGSTOP, a debugger) would hold the request until continued
            os.kill(pid, getattr(signal, "SIGCONT", signal.SIGTERM))
    except ProcessLookupError:
        return False
    return True


def kernel32() -> Any:
    """Windows' kernel32 through ctypes (Windows only; tests replace it)."""
    import ctypes

    return getattr(ctypes, "windll").kernel32  # noqa: B009 - windll exists on Windows only: no per-platform ignores


def advapi32() -> Any:
    """Windows' advapi32 through ctypes (Windows only; tests replace it)."""
    import ctypes

    return getattr(ctypes, "windll").advapi32  # noqa: B009 - as in kernel32()


def windows_same_account(pid: int) -> bool:
    """True when process `pid` runs as this process's user account (Windows: the user SIDs of the two
    processes' tokens are equal); False when another account's, or when that cannot be told (gone, or its
    token not readable to us, as another user's is)."""
    k32 = kernel32()
    handle = k32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return False
    try:
        theirs, ours = _token_user(handle), _token_user(k32.GetCurrentProcess())
        return theirs is not None and ours is not None and bool(advapi32().EqualSid(_sid(theirs), _sid(ours)))
    finally:
        k32.CloseHandle(handle)


def _token_user(process: Any) -> Any:
    """The TOKEN_USER of a process handle's token (a ctypes buffer: the SID pointer points into it); None
    when it cannot be read."""
    import ctypes
    from ctypes import wintypes

    adv, token = advapi32(), wintypes.HANDLE()
    if not adv.OpenProcessToken(process, TOKEN_QUERY, ctypes.byref(token)):
        return None
    try:
        size = wintypes.DWORD()
        adv.GetTokenInformation(token, TOKEN_USER, None, 0, ctypes.byref(size))  # fails, saying the size
        if not size.value:
            return None
        buffer = ctypes.create_string_buffer(size.value)
        if not adv.GetTokenInformation(token, TOKEN_USER, buffer, size, ctypes.byref(size)):
            return None
        return buffer
    finally:
        kernel32().CloseHandle(token)


def _sid(token_user: Any) -> Any:
    """The SID pointer at the head of a TOKEN_USER buffer."""
    import ctypes

    return ctypes.c_void_p(ctypes.cast(token_user, ctypes.POINTER(ctypes.c_void_p))[0])


def _ps(pid: int, fields: str) -> str | None:
    import subprocess  # only where there is no /proc: the warm path imports this module

    try:
        result = subprocess.run(["ps", "-ww", "-o", fields, "-p", str(pid)], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, check=False)
    except OSError:
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _windows_identity(pid: int) -> str | None:
    """The creation time of a running process (a process that exited has an exit code other than STILL_ACTIVE)."""
    import ctypes
    from ctypes import wintypes

    k32 = kernel32()
    handle = k32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return None
    try:
        code = wintypes.DWORD()
        times = [wintypes.FILETIME() for _ in range(4)]
        if not k32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value != STILL_ACTIVE:
            return None
        if not k32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        return f"win:{times[0].dwHighDateTime}:{times[0].dwLowDateTime}"
    finally:
        k32.CloseHandle(handle)


def _windows_terminate(pid: int) -> bool:
    """TerminateProcess on a running process; False when it is gone (or not ours to end)."""
    import ctypes
    from ctypes import wintypes

    k32 = kernel32()
    handle = k32.OpenProcess(PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return False
    try:
        code = wintypes.DWORD()
        if not k32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value != STILL_ACTIVE:
            return False
        return bool(k32.TerminateProcess(handle, TERMINATED_EXIT_CODE))
    finally:
        k32.CloseHandle(handle)
