"""Every exception the package raises, in one hierarchy::

    RuntimeError
    └── LauncherError            a runtime failure (exit code 1)
        ├── ConfigError          bad config or command line (exit 2); nothing was done
        │   ├── TemplateError    a `key`/`command` template the sandbox refuses
        │   └── UsageError       a command-line mistake
        ├── LaunchError          the service could not be started
        │   └── ServiceFailedError   it started, then failed or went silent
        ├── HandshakeError       the service did not answer its HTTP check
        ├── HostError            a step on the host failed (connect, SFTP, exec)
        │   ├── AuthenticationError
        │   └── HostKeyError
        ├── TunnelError          the tunnel could not be set up or kept
        ├── BrokerUnavailable    no connection broker can serve: the command logs in itself
        └── NotRunningError      nothing to show: the service is not running (exit 3)

`LauncherError` derives from `RuntimeError`, as in the original
remote-http-launcher, so `except RuntimeError` in existing callers still works.
`str(error)` is the one-line message the CLI prints; the structured fields
(`key`, `host`, `step`, `log_tail`) are set where known, and survive the trip
from the tunnel keeper process (`to_dict` / `from_dict`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_TUNNEL_DOWN = 4  # `status`: the service runs, but the tunnel its config asks for is down
EXIT_INTERRUPTED = 130
FIELDS = ("key", "host", "step", "log_tail")
ACCEPT_NEW_FLAG = "--accept-new-host-key"
#: How an unknown host key's error says to accept it, until the call the user made is known (HostKeyError.advising).
HOST_KEY_ADVICE = f"{ACCEPT_NEW_FLAG} (run(..., accept_new_host_key=True))"
NEAR_MISS = 0.8  # difflib's similarity ratio: 'tunel'/'tunnel' 0.91, 'ssh_host'/'ssh_hostname' 0.8


def near_miss(name: str, choices: Iterable[str]) -> str | None:
    """The one of `choices` that `name` most likely misspells (for "did you mean ...?"), if any."""
    import difflib  # only on an error's way out

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=NEAR_MISS)
    return close[0] if close else None


class LauncherError(RuntimeError):
    """Base class: a runtime failure (exit code 1).

    `key`: the service's key; `host`: the host (or SSH target) concerned;
    `step`: what was being done ("auth", "launch", ...); `log_tail`: the end of
    the service's log, when the error is about the service itself.
    """

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, key: str | None = None, host: str | None = None,
                 step: str | None = None, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.host = host
        self.step = step
        self.log_tail = log_tail

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; `from_dict` rebuilds the same class with the same fields."""
        return {"error": type(self).__name__, "message": self.message,
                **{name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> LauncherError:
        kind = _CLASSES.get(str(data.get("error")), LauncherError)
        fields = {name: str(data[name]) for name in FIELDS if isinstance(data.get(name), str)}
        return kind(str(data.get("message", "")), **fields)


class ConfigError(LauncherError):
    """The configuration or command line is invalid (exit code 2); nothing was done."""

    exit_code = EXIT_USAGE


class TemplateError(ConfigError):
    """A `key` or `command` template is malformed or uses something the sandbox refuses."""


class UsageError(ConfigError):
    """A command-line mistake (argparse's own errors would exit without our format)."""


class LaunchError(LauncherError):
    """The service could not be started, or failed while starting."""


class ServiceFailedError(LaunchError):
    """The service was started but failed or went silent; the message ends with its log's tail."""


class HandshakeError(LauncherError):
    """The service did not answer its HTTP handshake."""


class HostError(LauncherError):
    """A step on the host (SSH connect, auth, host key, SFTP, exec) failed."""


class AuthenticationError(HostError):
    """No authentication method was accepted by the SSH server."""


class HostKeyError(HostError):
    """The SSH server's host key is unknown or has changed."""

    def advising(self, how: str) -> HostKeyError:
        """The same error with HOST_KEY_ADVICE (both ways to accept a new key) as `how`, the one way of
        the call the user made (a flag, or a keyword of the function called)."""
        return HostKeyError(self.message.replace(HOST_KEY_ADVICE, how), key=self.key, host=self.host,
                            step=self.step, log_tail=self.log_tail)


class TunnelError(LauncherError):
    """The SSH tunnel could not be set up or kept alive."""


class BrokerUnavailable(LauncherError):
    """No connection broker can serve this command (none starts, or one fails or is refused); the command
    then logs in itself, so users meet it only when that login fails too."""


class NotRunningError(LauncherError):
    """The service is not running, so there is nothing to show (exit code 3)."""

    exit_code = EXIT_NOT_RUNNING


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a launch, with what it leaves behind (`left`: a running service or job and how to end
    it, a queued job cancelled; "" when nothing was started)."""

    def __init__(self, left: str) -> None:
        super().__init__(left)
        self.left = left


_CLASSES: dict[str, type[LauncherError]] = {
    cls.__name__: cls for cls in (
        LauncherError, ConfigError, TemplateError, UsageError, LaunchError, ServiceFailedError, HandshakeError,
        HostError, AuthenticationError, HostKeyError, TunnelError, BrokerUnavailable, NotRunningError)
}

__all__ = [
    "EXIT_INTERRUPTED", "EXIT_NOT_RUNNING", "EXIT_OK", "EXIT_RUNTIME", "EXIT_TUNNEL_DOWN", "EXIT_USAGE",
    "AuthenticationError", "BrokerUnavailable", "ConfigError", "HandshakeError", "HostError", "HostKeyError",
    "LaunchError", "LauncherError", "NotRunningError", "ServiceFailedError", "TemplateError", "TunnelError",
    "UsageError",
]
