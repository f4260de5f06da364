"""`logs`: the tail of a service's log, and following it while the service runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from ..config import Config, evaluate_key
from ..connect import open_host
from ..errors import NotRunningError, UsageError
from ..hosts import Host
from ..progress import Progress
from ..prompts import Prompt
from ..service import Service
from .entries import RUNNING, STARTING, classify

DEFAULT_TAIL = 50
#: At most this many bytes of a log are read at once, for `--tail` and each read of `--follow`: lines may be
#: any length (a progress bar redrawn with \r is one line), memory is not.
TAIL_MAX_BYTES = 1 << 20
FOLLOW_INTERVAL = 0.25
ALIVE_CHECK_INTERVAL = 1.0
READ_CHUNK = 64 * 1024


def cut_marker(max_bytes: int) -> bytes:
    return f"[remote-http-launcher: earlier output cut; at most the last {max_bytes} bytes of the log are " \
           f"shown (--tail-bytes)]\n".encode()


def read_tail(host: Host, path: str, lines: int, max_bytes: int = TAIL_MAX_BYTES) -> tuple[bytes, int] | None:
    """The last `lines` lines of a file, from its last `max_bytes` bytes at most, and the offset of its end;
    None when absent. Lines cut at that bound start with `cut_marker`.

    Reads backwards in growing chunks, so a long log over SFTP costs little.
    """
    chunk = min(READ_CHUNK, max_bytes)
    while True:
        result = host.read_from(path, -chunk, chunk)
        if result is None:
            return None
        data, end = result
        body = data[:-1] if data.endswith(b"\n") else data
        parts = body.split(b"\n")
        # Unless the chunk starts the file, its first line may be partial: need one more.
        whole = len(data) >= end
        if len(parts) > lines or whole or chunk >= max_bytes:
            break
        chunk = min(chunk * 4, max_bytes)
    if lines <= 0 or not data:
        return b"", end
    text = b"\n".join(parts[-lines:])
    if not whole and len(parts) <= lines:  # the bound cut the first line shown
        text = cut_marker(max_bytes) + text
    return (text + b"\n" if data.endswith(b"\n") else text), end


def follow_file(host: Host, path: str, offset: int, alive: Callable[[], bool],
                interval: float = FOLLOW_INTERVAL, max_bytes: int = TAIL_MAX_BYTES) -> Iterator[bytes]:
    """New bytes of a growing file until `alive()` turns false (one last read after that), read `max_bytes`
    at most at a time."""
    last_check = time.monotonic()
    running = True
    while True:
        result = host.read_from(path, offset, max_bytes)
        more = False
        if result is not None:
            data, end = result
            if end < offset:  # truncated (a relaunch starts a fresh log): start over
                offset = 0
                continue
            if data:
                yield data
            offset = end
            more = len(data) >= max_bytes
        if more:
            continue  # the rest of what is there, before any wait
        if not running:
            return
        if time.monotonic() - last_check >= ALIVE_CHECK_INTERVAL:
            running = alive()
            last_check = time.monotonic()
            if not running:
                continue  # one last read
        time.sleep(max(interval, host.poll_interval))


class LogsResult(NamedTuple):
    """What `logs` read, and whether the service was running when it finished (`logs` exits 3 if not)."""

    text: str
    running: bool


def logs(config: Config, *, tail: int = DEFAULT_TAIL, tail_bytes: int | None = None,
         prompt: Prompt | None = None) -> str:
    """The last `tail` lines of the service log, from its last `tail_bytes` bytes at most (None: TAIL_MAX_BYTES)."""
    return read_logs(config, tail=tail, tail_bytes=TAIL_MAX_BYTES if tail_bytes is None else tail_bytes,
                     prompt=prompt).text


def read_logs(config: Config, *, tail: int = DEFAULT_TAIL, tail_bytes: int = TAIL_MAX_BYTES,
              output: BinaryIO | None = None, follow: bool = False, progress: Progress | None = None,
              prompt: Prompt | None = None, accept_new_host_key: bool = False) -> LogsResult:
    """The last `tail` lines of the service log (from its last `tail_bytes` bytes at most), also written to
    `output` when given, and whether the service runs.

    With `follow`, new output is then written to `output` as it arrives, until
    the service's process ends (or KeyboardInterrupt).
    """
    if tail_bytes < 1:
        raise UsageError(f"--tail-bytes: expected a whole number of bytes >= 1, got {tail_bytes}")
    progress = progress or Progress.silent()
    progress.phase(f"connecting to {config.ssh_target}" if config.remote else "reading server state")
    with open_host(config, prompt, accept_new_host_key=accept_new_host_key) as host:
        service = Service(host, config, evaluate_key(config))
        status_now, state, _detail = classify(host, service.read_status(), service.status_file)
        path = state.log if state and state.log else service.log_file
        result = read_tail(host, path, tail, tail_bytes)
        if result is None:
            raise NotRunningError(f"{service.key}: no log at {path} on {host.name}; the service has not been "
                                  "launched there, or 'stop' removed its log ('stop --keep-log' keeps it); start "
                                  "it with 'remote-http-launcher CONFIG'", key=service.key,
                                  host=host.name, step="logs")
        text, end = result
        progress.close()
        running = state is not None and status_now in (RUNNING, STARTING)
        if output is not None:
            output.write(text)
            output.flush()
            if follow and running and state is not None:
                for chunk in follow_file(host, path, end, lambda: service.is_ours(state), max_bytes=tail_bytes):
                    output.write(chunk)
                    output.flush()
                running = False  # the follow ends when the service's process does
    return LogsResult(text.decode(errors="replace"), running)
