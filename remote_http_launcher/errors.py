"""One exception hierarchy for the whole package.

Every error carries a one-line message that names the field or step and what
to do next; the CLI prints it as is and maps the class to an exit code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class LauncherError(Exception):
    """Base class: a runtime failure (exit code 1)."""

    exit_code = EXIT_RUNTIME


class ConfigError(LauncherError):
    """The configuration or command line is invalid (exit code 2); nothing was done."""

    exit_code = EXIT_USAGE


class TemplateError(ConfigError):
    """A `key` or `command` template is malformed or uses something the sandbox refuses."""


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


class TunnelError(LauncherError):
    """The SSH tunnel could not be set up or kept alive."""
