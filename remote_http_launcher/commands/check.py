"""`check`: whether a service could be launched, step by step, without launching it.

A first `up` that fails on an SSH detail says what failed, but only for the
first step that did; `check` walks every step a launch takes (the config, the
SSH target as ~/.ssh/config resolves it, the server's port, its host key, a
login that needs no answer, then on the service's host `sh`, the state
directory, the workdir, conda, the command's program and the scheduler's
commands) and says for each what it found, and for each failure what to do.
It changes nothing on any host; only `accept_new_host_key` records a key,
as it does for every command.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING, Literal, TypedDict

from .. import scripts
from ..config import Config, evaluate_key, load_config
from ..errors import ConfigError, HostError, HostKeyError
from ..hosts import Host, LocalHost
from ..schedulers import SCHEDULERS

if TYPE_CHECKING:
    from ..ssh.certs import Certificate
    from ..ssh.config import Endpoint

Outcome = Literal["ok", "fail", "info"]
OK: Outcome = "ok"
FAIL: Outcome = "fail"
INFO: Outcome = "info"
GREETING_LIMIT = 255  # an SSH server's identification line is at most this long (RFC 4253)
PLAIN_PROGRAM = re.compile(r"(?:~/)?[A-Za-z0-9_./+-]+")  # a program name the check can look up as written
OUTCOMES: dict[str, Outcome] = {OK: "ok", FAIL: "fail", INFO: "info"}
CERT_ADVICE = "get a new certificate from your site's certificate authority (sshproxy, Vault, step ...), or fix " \
    "CertificateFile in ~/.ssh/config"
SH_ADVICE = "the account needs a POSIX sh (and no forced command such as rhl-guard) for this check"
ADVICE = {  # what to do when a line of sh/check.sh fails
    "state directory": "make ~/.remote-http-launcher/server on the host yours and writable",
    "workdir": "choose a workdir the (SSH) user may create, or create it",
    "conda": "create the environment on the host (conda create -n NAME ...), or fix the conda field",
    "program": "install it on the host, or give its absolute path in command",
    "scheduler": "run the service where the scheduler's commands are (the login node), or drop the scheduler field",
}


class Check(TypedDict):
    """One line of the checklist: what was checked, what was found, and for a failure what to do."""

    name: str
    outcome: Outcome
    detail: str
    advice: str


class CheckReport(TypedDict):
    config: str
    ok: bool
    #: True when the config itself is invalid (the CLI's exit code 2: nothing else could be checked).
    config_error: bool
    checks: list[Check]


def check(path: str, *, accept_new_host_key: bool = False) -> CheckReport:
    """Check every step a launch of the config at `path` takes; questions are never asked (a login that
    needs an answer fails, with how to give one)."""
    import warnings

    checks: list[Check] = []
    report = CheckReport(config=path, ok=False, config_error=False, checks=checks)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = load_config(path)
            key = evaluate_key(config)
    except ConfigError as exc:
        checks.append(_fail("config", str(exc), "fix the field it names (config.schema.yaml lists them all)"))
        report["config_error"] = True
        return report
    notes = "; ".join(str(warning.message) for warning in caught)
    checks.append(Check(name="config", outcome=OK, detail=f"valid, key {key}" + (f" ({notes})" if notes else ""),
                        advice=""))
    host = _login(config, checks, accept_new_host_key) if config.remote else LocalHost()
    if host is not None:
        with host:
            _on_host(config, host, checks)
    report["ok"] = all(item["outcome"] != FAIL for item in checks)
    return report


def _fail(name: str, detail: str, advice: str) -> Check:
    return Check(name=name, outcome=FAIL, detail=detail, advice=advice)


def _login(config: Config, checks: list[Check], accept_new_host_key: bool) -> Host | None:
    """The SSH steps, each its own line; the host once logged in, else None (the rest cannot be checked)."""
    try:
        from ..hosts.ssh import SSHHost
        from ..ssh import config as ssh_config
        from ..ssh.connection import connect
        from ..ssh.hostkeys import ACCEPT_NEW
    except ImportError as exc:
        checks.append(_fail("ssh", f"SSH support is not available ({exc})", "reinstall remote-http-launcher"))
        return None
    target = config.ssh_target
    user, _, name = target.rpartition("@")
    try:
        options = ssh_config.load_ssh_config([ACCEPT_NEW] if accept_new_host_key else [])
        endpoint = ssh_config.resolve(options, name, user or None)
    except HostError as exc:
        checks.append(_fail("ssh target", str(exc), "fix ~/.ssh/config at the line it names"))
        return None
    checks.append(Check(name="ssh target", outcome=OK, detail=_resolution(target, endpoint), advice=""))
    checks.append(_login_methods(endpoint))
    methods = _certificates(endpoint)
    if endpoint.flag("gssapiauthentication", False):
        methods.append(_kerberos(endpoint))
    checks.extend(methods)
    direct = not _proxy(endpoint)
    if direct:
        reached = _reach(endpoint, ssh_config.misspelt_alias(options, endpoint))
        checks.append(reached)
        if reached["outcome"] == FAIL:
            return None
    try:
        connection = connect(target, interactive=False, accept_new_host_key=accept_new_host_key)
    except HostError as exc:
        checks.extend(_connect_failure(exc, endpoint, direct))
        return None
    for method in methods:  # e.g. Debian's `GSSAPIAuthentication yes` for every host, where keys log in
        if method["outcome"] == FAIL:
            method.update(Check(name=method["name"], outcome=INFO, advice="",
                                detail=f"{method['detail']} (the login works without it)"))
    checks.append(Check(name="host key", outcome=OK, detail=f"known as {endpoint.known_hosts_name}", advice=""))
    checks.append(Check(name="login", outcome=OK, detail=f"{endpoint.user}@{endpoint.hostname} without a question "
                        "(what the tunnel's reconnects need)", advice=""))
    return SSHHost(connection, name=target)


def _resolution(target: str, endpoint: Endpoint) -> str:
    """`alias → user@host:port`, as `ssh -G` would resolve it, with the way there when not direct."""
    via = _proxy(endpoint)
    return f"{target} → {endpoint.user}@{endpoint.hostname}:{endpoint.port}" + (f" via {via}" if via else "")


def _proxy(endpoint: Endpoint) -> str:
    jump = endpoint.option("proxyjump")
    if jump and jump.lower() != "none":
        return f"ProxyJump {jump}"
    command = endpoint.option("proxycommand")
    return "ProxyCommand" if command and command.lower() != "none" else ""


def _login_methods(endpoint: Endpoint) -> Check:
    """What a login can offer without asking: agent keys, key files (and their certificates), a Kerberos
    ticket. Informational: the login step says whether any of them works."""
    from ..ssh.agent import open_agent
    from ..ssh.auth import identity_files
    from ..ssh.config import shorten

    try:
        agent = open_agent(endpoint.option("identityagent"))
        agent_keys = len(agent.get_keys()) if agent is not None else 0
        if agent is not None:
            agent.close()
    except Exception:  # an agent we cannot talk to is as good as none
        agent_keys = 0
    files = [path for path in identity_files(endpoint) if path.exists()]
    parts = [f"agent: {agent_keys} key{'s' * (agent_keys != 1)}",
             "key files: " + (", ".join(shorten(path) for path in files) or "none")]
    if os.environ.get("KRB5CCNAME") and not endpoint.flag("gssapiauthentication", False):
        parts.append("Kerberos ticket: present, not used (no GSSAPIAuthentication yes)")
    return Check(name="login methods", outcome=INFO, detail="; ".join(parts), advice="")


def _certificates(endpoint: Endpoint) -> list[Check]:
    """A line for each user certificate a login would offer (CertificateFile, `<IdentityFile>-cert.pub`,
    the agent's): who and until when it is valid, or why the server would refuse it."""
    from ..ssh.agent import open_agent
    from ..ssh.auth import certificate_files, identity_files
    from ..ssh.certs import is_certificate, parse, read
    from ..ssh.config import shorten

    found: list[Certificate | Check] = []
    for path, configured in [*((path, True) for path in certificate_files(endpoint)),
                             *((path.with_name(path.name + "-cert.pub"), False) for path in identity_files(endpoint))]:
        try:
            found.append(read(path, shorten(path)))
        except FileNotFoundError:
            if configured:
                found.append(_fail("certificate", f"{shorten(path)} (CertificateFile) is missing", CERT_ADVICE))
        except (OSError, ValueError) as exc:
            found.append(_fail("certificate", f"{shorten(path)}: {exc}", CERT_ADVICE))
    try:
        agent = open_agent(endpoint.option("identityagent"))
        keys = agent.get_keys() if agent is not None else ()
        if agent is not None:
            agent.close()
    except Exception:  # an agent we cannot talk to: the login methods line shows no keys
        keys = ()
    for key in keys:
        if is_certificate(key.get_name()):
            try:
                found.append(parse(getattr(key, "blob", b""), f"agent certificate {getattr(key, 'comment', '')}"))
            except ValueError as exc:
                found.append(_fail("certificate", f"agent certificate: {exc}", CERT_ADVICE))
    checks: list[Check] = []
    seen: set[bytes] = set()
    for item in found:
        if isinstance(item, dict):
            checks.append(item)
        elif item.blob not in seen:
            seen.add(item.blob)
            problem = item.problem(endpoint.user)
            detail, _, advice = problem.partition("; ")
            checks.append(_fail("certificate", detail, CERT_ADVICE if advice in ("", "get a new one") else advice)
                          if problem else
                          Check(name="certificate", outcome=OK, detail=_certificate_detail(item), advice=""))
    return checks


def _certificate_detail(cert: Certificate) -> str:
    """`LABEL: for alice, bob, valid until T` (`for any user`, `forever`), as ssh-keygen -L shows it."""
    from ..ssh.certs import when

    who = ", ".join(cert.principals) if cert.principals else "any user"
    until = when(cert.valid_before)
    return f"{cert.label}: for {who}, valid {until if until == 'forever' else 'until ' + until}"


def _kerberos(endpoint: Endpoint) -> Check:
    """The Kerberos ticket (GSSAPIAuthentication yes): whose, until when, and whether it gets one for the
    server's principal; none or an expired one fails, saying to get one."""
    from ..ssh.certs import when
    from ..ssh.kerberos import Unavailable, server_name, start, ticket

    server = endpoint.option("gssapiserveridentity") or endpoint.hostname
    if not endpoint.option("gssapiserveridentity") and endpoint.flag("gssapitrustdns", False) \
            and not _proxy(endpoint):
        try:
            address = str(socket.getaddrinfo(endpoint.hostname, endpoint.port, proto=socket.IPPROTO_TCP)[0][4][0])
        except OSError:
            address = ""
        server = server_name(endpoint.hostname, address, True)
    context = start(server, delegate=False)
    if isinstance(context, Unavailable) and context.skipped:
        return _fail("Kerberos", context.detail, context.advice)
    held = ticket()
    whose = f"{held[0]}, valid until {when(int(held[1]))}" if held else "a ticket"
    if isinstance(context, Unavailable):
        return _fail("Kerberos", f"{whose}; no ticket for host/{server}: {context.short}",
                     "the server's principal is host/NAME: check HostName, GSSAPIServerIdentity and GSSAPITrustDNS "
                     "in ~/.ssh/config")
    return Check(name="Kerberos", outcome=OK, detail=f"{whose}; gets one for host/{server}", advice="")


def _reach(endpoint: Endpoint, misspelt: str) -> Check:
    """A TCP connection to the server and its SSH greeting (a wrong port answers something else, or nothing).
    `misspelt`: what to add when the name does not resolve (ssh.config.misspelt_alias)."""
    address = f"{endpoint.hostname}:{endpoint.port}"
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port), timeout=endpoint.connect_timeout) as sock:
            sock.settimeout(endpoint.connect_timeout)
            greeting = sock.recv(GREETING_LIMIT).split(b"\r\n", 1)[0].decode("ascii", "replace")
    except socket.gaierror as exc:
        return _fail("reachable", f"cannot resolve host name {endpoint.hostname!r} ({exc.strerror}){misspelt}",
                     "check the name, or add a Host entry for it to ~/.ssh/config")
    except OSError as exc:
        return _fail("reachable", f"{address}: {exc.strerror or exc}",
                     "check the address and Port, and that no firewall or VPN is in the way")
    if not greeting.startswith("SSH-"):
        return _fail("reachable", f"{address} answers, but not with an SSH greeting ({greeting[:60]!r})",
                     "check the Port in ~/.ssh/config")
    return Check(name="reachable", outcome=OK, detail=f"{address} ({greeting})", advice="")


def _connect_failure(exc: HostError, endpoint: Endpoint, reached: bool) -> list[Check]:
    """The failed connection step as lines: the steps before it passed, the ones after cannot be told."""
    if isinstance(exc, HostKeyError) or exc.step == "host key":
        advice = "compare the fingerprint with the server's, then run again with --accept-new-host-key" \
            if "unknown" in str(exc) else "see the message: the key known_hosts has is not the server's"
        return [_fail("host key", str(exc), advice)]
    if exc.step == "auth":
        return [Check(name="host key", outcome=OK, detail=f"known as {endpoint.known_hosts_name}", advice=""),
                _fail("login", str(exc), "load a key into your agent (ssh-add), name one with IdentityFile in "
                      "~/.ssh/config, or authorize yours on the server (ssh-copy-id)")]
    name = "reachable" if not reached else "key exchange"
    return [_fail(name, str(exc), "check the address, Port and ProxyJump/ProxyCommand in ~/.ssh/config")]


def _on_host(config: Config, host: Host, checks: list[Check]) -> None:
    """One script on the service's host (sh/check.sh) for everything a launch needs there."""
    try:
        state_dir = host.state_dir
        workdir = host.expand(config.workdir)
    except (HostError, ConfigError) as exc:
        checks.append(_fail("state directory", str(exc), ADVICE["state directory"]))
        return
    program = ""
    if not config.conda:  # a conda environment puts its own programs first on PATH
        plan = scripts.exec_plan(config.command_template)
        if plan and PLAIN_PROGRAM.fullmatch(plan[0]) and "{" not in plan[0]:
            program = host.expand(plan[0])
    commands = SCHEDULERS[config.scheduler.type].commands if config.scheduler else ()
    try:
        result = host.run_script(scripts.program("prepare", "check"),
                                 [state_dir, workdir, config.conda or "", program, *commands])
    except HostError as exc:
        checks.append(_fail("sh", str(exc), SH_ADVICE))
        return
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines:
        checks.append(_fail("sh", f"the check script failed on {host.name} (exit {result.returncode}): "
                            f"{result.stderr.strip()[:200]}",
                            SH_ADVICE))
        return
    for line in lines:
        name, outcome, detail = [*line.split("\t", 2), "", ""][:3]
        if outcome in OUTCOMES:
            checks.append(Check(name=name, outcome=OUTCOMES[outcome], detail=detail,
                                advice=ADVICE.get(name, "") if outcome == FAIL else ""))
