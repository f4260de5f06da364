"""SFTP requests pipelined: sent back to back, their replies collected in order.

Round trips dominate over slow links; paramiko's file objects wait for each
reply, so the requests a reconnect needs go through PipelinedSFTP, on top of
paramiko's request layer (reached through _paramiko.py).
"""

from __future__ import annotations

from typing import Any

from ._paramiko import SFTPClientHooks, async_request, attributes_from, paramiko, read_response, send_channel_request


class PipelinedSFTP:
    """SFTP requests sent back to back, then their replies collected in order.

    paramiko's file objects wait for each reply (open, read, read-to-EOF,
    close: four round trips for a small file); OpenSSH's sftp-server answers
    in request order, so we send what does not depend on an answer at once.
    This uses paramiko's request/response layer (_paramiko.py), kept to this class.
    """

    CHUNK = 32768  # bytes per read or write request, as paramiko and sftp-server use

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self.client = client

    @classmethod
    def start(cls, transport: paramiko.Transport) -> PipelinedSFTP:
        """A new SFTP session, in one round trip (paramiko's open_sftp_client waits for three).

        Only the channel open is waited for: its confirmation carries the
        channel number that the next messages need. The subsystem request
        and SFTP's INIT follow at once (the server handles a channel's
        messages in order, so our first requests reach the started
        subsystem), and the server's VERSION is read just before the first
        reply. A refused subsystem closes the channel, which that read reports.
        """
        channel = transport.open_session()
        send_channel_request(channel, "subsystem", "sftp")
        return cls(_client_reading_version_later(channel))

    def _send(self, kind: int, *args: Any) -> int:
        return async_request(self.client, kind, *args)

    def _reply(self, number: int) -> paramiko.Message:
        """The reply to request `number`; an error status raises (EOFError, or OSError with errno when known)."""
        return read_response(self.client, number)

    def _attributes(self, number: int) -> paramiko.SFTPAttributes:
        return attributes_from(self._reply(number))

    def open(self, path: str, *flags: str, mode: int | None = None) -> bytes:
        return self.handle(self.send_open(path, *flags, mode=mode))

    def send_open(self, path: str, *flags: str, mode: int | None = None) -> int:
        """Send an open request (flags: READ, WRITE, CREATE, EXCL...); `handle` collects its reply."""
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = mode
        bits = 0
        for flag in flags:
            bits |= getattr(paramiko.sftp, f"SFTP_FLAG_{flag}")
        return self._send(paramiko.sftp.CMD_OPEN, path, bits, attrs)

    def handle(self, opening: int) -> bytes:
        """The handle an open request returned; OSError (FileNotFoundError...) when it failed."""
        return self._reply(opening).get_binary()

    def read_and_close(self, handle: bytes, offset: int = 0, limit: int | None = None) -> bytes:
        """Read to the end (a short read ends it), or `limit` bytes at most; the close is not waited for."""
        chunks = []
        try:
            if limit is not None:
                return self._read_at_most(handle, offset, limit)
            while True:
                try:
                    reading = self._send(paramiko.sftp.CMD_READ, handle, paramiko.sftp.int64(offset), self.CHUNK)
                    data = self._reply(reading).get_string()
                except EOFError:
                    break
                chunks.append(data)
                offset += len(data)
                if len(data) < self.CHUNK:
                    break
        finally:
            self._send(paramiko.sftp.CMD_CLOSE, handle)
        return b"".join(chunks)

    def _read_at_most(self, handle: bytes, offset: int, limit: int) -> bytes:
        """A first chunk and, if it was full, the rest up to `limit` in one flight: two round trips for any size
        (state files are one chunk)."""
        end = offset + limit
        starts = range(offset, end, self.CHUNK)
        chunks: list[bytes] = []
        for flight in (starts[:1], starts[1:]):
            requests = [(self._send(paramiko.sftp.CMD_READ, handle, paramiko.sftp.int64(start),
                                    min(self.CHUNK, end - start)), min(self.CHUNK, end - start)) for start in flight]
            complete = True
            for number, size in requests:  # every reply is collected, also those past the end
                try:
                    data = self._reply(number).get_string()
                except EOFError:
                    data = b""
                if complete:
                    chunks.append(data)
                    complete = len(data) == size
            if not complete:
                break
        return b"".join(chunks)

    def fstat(self, handle: bytes) -> paramiko.SFTPAttributes:
        return self._attributes(self._send(paramiko.sftp.CMD_FSTAT, handle))

    def fstat_read_and_close(self, handle: bytes) -> tuple[paramiko.SFTPAttributes, bytes]:
        """Attributes and first chunk of a small file, and its close, in one flight."""
        stat_request = self._send(paramiko.sftp.CMD_FSTAT, handle)
        read_request = self._send(paramiko.sftp.CMD_READ, handle, paramiko.sftp.int64(0), self.CHUNK)
        self._send(paramiko.sftp.CMD_CLOSE, handle)
        attrs = self._attributes(stat_request)
        try:
            return attrs, self._reply(read_request).get_string()
        except EOFError:
            return attrs, b""

    def write_and_close(self, handle: bytes, data: bytes) -> None:
        """All writes and the close in one flight; any failure among them raises."""
        self.collect(self.send_write_and_close(handle, data))

    def send_write_and_close(self, handle: bytes, data: bytes) -> list[int]:
        """Send the writes and the close; `collect` their replies."""
        requests = [self._send(paramiko.sftp.CMD_WRITE, handle, paramiko.sftp.int64(start),
                               data[start:start + self.CHUNK]) for start in range(0, len(data), self.CHUNK)]
        requests.append(self._send(paramiko.sftp.CMD_CLOSE, handle))
        return requests

    def collect(self, requests: list[int]) -> None:
        """Wait for the replies to `requests`; a failure among them raises."""
        for number in requests:
            self._reply(number)

    def realpath_and_stat(self, path: str, other: str, also_open: str | None = None
                          ) -> tuple[str, paramiko.SFTPAttributes | None, int | None]:
        """realpath(path) and stat(other) in one flight; None when `other` is missing.

        `also_open` is opened for reading in the same flight; its request is
        returned, its reply left for `handle` (the next reply to collect).
        """
        realpath_request = self._send(paramiko.sftp.CMD_REALPATH, path)
        stat_request = self._send(paramiko.sftp.CMD_STAT, other)
        opening = None if also_open is None else self.send_open(also_open, "READ")
        names = self._reply(realpath_request)
        names.get_int()  # the number of names: one
        resolved = names.get_text()
        try:
            return resolved, self._attributes(stat_request), opening
        except OSError:
            return resolved, None, opening


def _client_reading_version_later(channel: paramiko.Channel) -> paramiko.SFTPClient:
    """An SFTPClient on a channel whose subsystem request is on its way: it sends INIT but
    reads the server's VERSION only before its first reply, so requests can follow at once."""

    class Client(SFTPClientHooks):
        version_pending = False

        def send_version(self) -> str:
            init = paramiko.Message()
            init.add_int(3)  # SFTP version 3, the one paramiko speaks
            self.send_packet(paramiko.sftp.CMD_INIT, init)
            self.version_pending = True
            return "3 (requested)"

        def read_packet(self) -> tuple[int, bytes]:
            if self.version_pending:
                self.version_pending = False
                try:
                    kind, _ = super().read_packet()
                except EOFError:
                    raise EOFError("the server ended the SFTP session (is its sftp subsystem enabled?)") from None
                if kind != paramiko.sftp.CMD_VERSION:
                    raise paramiko.SFTPError("Incompatible sftp protocol")
            return super().read_packet()

    return Client(channel)


__all__ = ["PipelinedSFTP"]
