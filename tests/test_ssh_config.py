"""~/.ssh/config read as OpenSSH reads it: Include, the system file, Match, unsupported options.

Unit tests run with HOME in a temporary directory and the system file
(remote_http_launcher.ssh.config.SYSTEM_SSH_CONFIG) pointed at a temporary
path, so the machine's own /etc/ssh/ssh_config never takes part; the last
test connects to the real test sshd through an alias found only in an
included file.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import HostError
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.ssh import config as ssh_config_module
from remote_http_launcher.ssh.config import MAX_INCLUDE_DEPTH, SUPPORTED_OPTIONS, load_ssh_config, resolve
from tests.conftest import ROOT
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

SSH_PACKAGE = Path(ssh_config_module.__file__).parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own (with ~/.ssh) and no system file (until a test writes `system`)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(ssh_config_module, "SYSTEM_SSH_CONFIG", tmp_path / "etc-ssh" / "ssh_config")
    return home


@pytest.fixture
def system(home: Path) -> Path:
    """Where the system file is looked for in this test (its directory exists, the file does not yet)."""
    path = ssh_config_module.SYSTEM_SSH_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_config(home: Path, text: str) -> Path:
    return write(home / ".ssh" / "config", text)


def lookup(host: str) -> dict[str, Any]:
    """The options that apply to `host` after a fresh load (keys lowercase, HostName always set)."""
    return resolve(load_ssh_config(), host).options


def load_error() -> str:
    with pytest.raises(HostError) as caught:
        load_ssh_config()
    message = str(caught.value)
    assert "\n" not in message and caught.value.step == "ssh config"
    return message


# ---------------------------------------------------------------- no files, one file

def test_no_config_at_all(home: Path) -> None:
    endpoint = resolve(load_ssh_config(), "plain.example")
    assert (endpoint.hostname, endpoint.port) == ("plain.example", 22)


def test_first_obtained_value_wins_within_a_file(home: Path) -> None:
    user_config(home, "Host a\n  Port 1001\n  Port 1002\n  User first\nHost *\n  Port 1003\n  User second\n"
                      "  HostName everyone.example\n")
    endpoint = resolve(load_ssh_config(), "a")
    assert (endpoint.port, endpoint.user, endpoint.hostname) == (1001, "first", "everyone.example")
    assert resolve(load_ssh_config(), "b").port == 1003


def test_a_broken_line_keeps_the_current_message(home: Path) -> None:
    user_config(home, "Host a\n  Port 2\nBogusLineWithoutValue\n")
    assert load_error() == "ssh config ~/.ssh/config: Unparsable line BogusLineWithoutValue"


@pytest.mark.parametrize(("line", "message"), [
    ('Host "a', "Unparsable host \"a"),
    ("Match host", "Missing parameter to Match 'host' keyword"),
    ("Match all host a", "Match does not allow 'all' mixed with anything but 'canonical'"),
])
def test_broken_host_and_match_lines_keep_paramikos_messages(home: Path, line: str, message: str) -> None:
    user_config(home, f"{line}\n  Port 2\n")
    assert load_error() == f"ssh config ~/.ssh/config: {message}"


def test_the_files_read_are_reported_unless_a_match_exec_line_decides(home: Path, system: Path) -> None:
    """What ssh/dialahead.py keys a remembered address by: both files (read or not) and every file included."""
    user_config(home, "Include conf.d/*\nHost a\n  Port 2\n")
    included = write(home / ".ssh" / "conf.d" / "one", "Host b\n  Port 3\n")
    sources: list[str] = []
    load_ssh_config((), sources)
    assert sources == [str(home / ".ssh" / "config"), str(system), str(included)]
    write(home / ".ssh" / "conf.d" / "two", 'Match exec "true"\n  User z\n')
    sources = []
    load_ssh_config((), sources)
    assert sources == []


# ---------------------------------------------------------------- Include: paths

@pytest.mark.parametrize("how", ["relative", "absolute", "tilde", "quoted", "equals"])
def test_include_paths(home: Path, tmp_path: Path, how: str) -> None:
    elsewhere = write(tmp_path / "elsewhere" / "hosts.conf", "Host a\n  HostName a.example\n")
    write(home / ".ssh" / "hosts.conf", "Host a\n  HostName a.example\n")
    write(home / "my ssh" / "hosts.conf", "Host a\n  HostName a.example\n")
    line = {"relative": "Include hosts.conf", "absolute": f"Include {elsewhere}",
            "tilde": "Include ~/.ssh/hosts.conf", "quoted": 'Include "~/my ssh/hosts.conf"',
            "equals": "include=hosts.conf"}[how]
    user_config(home, f"{line}\n")
    assert lookup("a")["hostname"] == "a.example"


def test_relative_includes_are_relative_to_dot_ssh_even_when_nested(home: Path) -> None:
    """As in OpenSSH: not to the including file's directory."""
    user_config(home, "Include conf.d/outer.conf\n")
    write(home / ".ssh" / "conf.d" / "outer.conf", "Include inner.conf conf.d/inner.conf\n")
    write(home / ".ssh" / "conf.d" / "inner.conf", "Host a\n  User from-conf-d\n")
    write(home / ".ssh" / "inner.conf", "Host a\n  User from-dot-ssh\n")
    assert lookup("a")["user"] == "from-dot-ssh"


def test_glob_includes_in_sorted_order_and_several_per_line(home: Path) -> None:
    """Files of a glob come in byte order (OpenSSH's glob sorts): 10 < 20 < 9; then the next word."""
    for name, port in (("20-b.conf", 1020), ("9-c.conf", 1009), ("10-a.conf", 1010)):
        write(home / ".ssh" / "conf.d" / name, f"Host a\n  Port {port}\n  IdentityFile ~/{name}.key\n")
    write(home / ".ssh" / "conf.d" / ".hidden.conf", "Host a\n  Port 1000\n")  # a glob skips dot files
    write(home / ".ssh" / "last", "Host a\n  IdentityFile ~/last.key\n")
    user_config(home, "Include conf.d/*.conf last\n")
    options = lookup("a")
    assert options["port"] == "1010"
    assert [Path(name).name for name in options["identityfile"]] == [
        "10-a.conf.key", "20-b.conf.key", "9-c.conf.key", "last.key"]


def test_nested_includes(home: Path) -> None:
    user_config(home, "Include one\nHost a\n  User from-config\n")
    write(home / ".ssh" / "one", "Include two\n")
    write(home / ".ssh" / "two", "Include three\n")
    write(home / ".ssh" / "three", "Host a\n  User from-three\n  Port 2003\n")
    options = lookup("a")
    assert (options["user"], options["port"]) == ("from-three", "2003")


def test_include_depth_limit_is_openssh_s(home: Path) -> None:
    """16 nested Includes are read; a 17th is an error naming the file with the Include line."""
    for level in range(1, MAX_INCLUDE_DEPTH + 1):
        write(home / ".ssh" / f"level{level}", f"Include level{level + 1}\n")
    write(home / ".ssh" / f"level{MAX_INCLUDE_DEPTH + 1}", "Host a\n  User deepest\n")
    user_config(home, "Include level2\n")  # the config is depth 0, level2 is 1, ..., level17 is 16
    assert lookup("a")["user"] == "deepest"
    user_config(home, "Include level1\n")
    assert load_error() == (f"ssh config ~/.ssh/level{MAX_INCLUDE_DEPTH} line 1: Include level{MAX_INCLUDE_DEPTH + 1}: "
                            f"more than {MAX_INCLUDE_DEPTH} nested Includes (does a file include itself?)")


@pytest.mark.parametrize("loop", ["itself", "each-other"])
def test_include_loop_is_one_line_naming_the_file(home: Path, loop: str) -> None:
    if loop == "itself":
        user_config(home, "Host a\n  Port 2\n  Include config\n")
        expected = "ssh config ~/.ssh/config line 3: Include config: more than 16 nested Includes"
    else:
        user_config(home, "Include ping\n")
        write(home / ".ssh" / "ping", "Include pong\n")
        write(home / ".ssh" / "pong", "# pong\nInclude ping\n")
        expected = "ssh config ~/.ssh/pong line 2: Include ping: more than 16 nested Includes"
    assert load_error().startswith(expected)


def test_missing_includes_are_ignored(home: Path) -> None:
    user_config(home, "Include nothing-here.conf\nInclude /nonexistent/dir/*.conf ~/absent\n"
                      "Include empty.d/*\nHost a\n  Port 2222\n")
    (home / ".ssh" / "empty.d").mkdir()
    assert lookup("a")["port"] == "2222"


def test_a_directory_matched_by_the_glob_is_skipped(home: Path) -> None:
    (home / ".ssh" / "conf.d" / "sub.conf").mkdir(parents=True)
    write(home / ".ssh" / "conf.d" / "z.conf", "Host a\n  Port 2222\n")
    user_config(home, "Include conf.d/*.conf\n")
    assert lookup("a")["port"] == "2222"


def test_errors_in_an_included_file_name_that_file(home: Path) -> None:
    user_config(home, "Include conf.d/*\n")
    write(home / ".ssh" / "conf.d" / "broken", "Host a\n  Port\n")
    assert load_error() == "ssh config ~/.ssh/conf.d/broken: Unparsable line Port"


# ---------------------------------------------------------------- Include: block context

def test_include_inside_a_host_block_applies_only_to_that_block(home: Path) -> None:
    write(home / ".ssh" / "a.conf", "User ua\nPort 2200\n")
    user_config(home, "Host a\n  Include a.conf\nHost b\n  HostName b.example\n")
    assert (lookup("a")["user"], lookup("a")["port"]) == ("ua", "2200")
    assert "user" not in lookup("b") and "port" not in lookup("b")
    assert "user" not in lookup("c")


def test_host_lines_in_an_included_file_stay_inside_the_including_block(home: Path) -> None:
    """OpenSSH: an included file's Host lines match only where the including block does, and the
    including block is back in force after the Include line."""
    write(home / ".ssh" / "inc.conf", "Compression yes\nHost *\n  HostName from-inc\nHost x\n  User ux\n")
    user_config(home, "Host a\n  Include inc.conf\n  Port 2201\nHost b x\n  Include inc.conf\n")
    a, b, c, x = lookup("a"), lookup("b"), lookup("c"), lookup("x")
    assert (a["compression"], a["hostname"], a["port"]) == ("yes", "from-inc", "2201")
    assert "user" not in a  # `Host x` in inc.conf, included under `Host a`, cannot match a
    assert (b["compression"], b["hostname"]) == ("yes", "from-inc") and "port" not in b and "user" not in b
    assert c["hostname"] == "c" and "compression" not in c  # `Host *` in inc.conf is inside `Host a`/`Host b x`
    assert x["user"] == "ux"


def test_include_inside_a_match_block(home: Path) -> None:
    write(home / ".ssh" / "inc.conf", "User from-inc\nHost a*\n  Port 2300\n")
    user_config(home, "Host a1\n  HostName real.example\nMatch host real.example\n  Include inc.conf\n")
    a1, a2 = lookup("a1"), lookup("a2")
    assert (a1["user"], a1["port"]) == ("from-inc", "2300")
    assert "user" not in a2 and "port" not in a2  # a2's HostName is not real.example


def test_top_level_lines_after_a_top_level_include_apply_to_every_host(home: Path) -> None:
    write(home / ".ssh" / "hosts.conf", "Host a\n  HostName a.example\n")
    user_config(home, "Include hosts.conf\nUser everyone\n")
    assert (lookup("a")["hostname"], lookup("a")["user"]) == ("a.example", "everyone")
    assert lookup("z")["user"] == "everyone"


# ---------------------------------------------------------------- the system file

def test_system_file_after_the_user_file_first_value_wins(home: Path, system: Path) -> None:
    user_config(home, "Host a\n  Port 2200\n  IdentityFile ~/user.key\nHost b\n  User ub\n")
    write(system, "ConnectTimeout 7\nHost a\n  User sa\n  IdentityFile ~/system.key\nHost *\n  Port 2300\n"
                  "  User sysuser\n")
    a, b, c = lookup("a"), lookup("b"), lookup("c")
    assert (a["port"], a["user"]) == ("2200", "sa")
    assert [Path(name).name for name in a["identityfile"]] == ["user.key", "system.key"]  # both, user's first
    assert (b["port"], b["user"]) == ("2300", "ub")
    assert (c["port"], c["user"]) == ("2300", "sysuser")
    # the user file's last block (`Host b`) does not swallow the system file's top-level lines
    assert a["connecttimeout"] == b["connecttimeout"] == c["connecttimeout"] == "7"


def test_system_file_alone(home: Path, system: Path) -> None:
    write(system, "Host a\n  HostName a.example\n")
    assert lookup("a")["hostname"] == "a.example"


def test_system_file_includes_are_relative_to_its_directory(home: Path, system: Path) -> None:
    write(system, "Include ssh_config.d/*.conf\n")
    write(system.parent / "ssh_config.d" / "hosts.conf", "Host a\n  Port 2400\n")
    write(home / ".ssh" / "ssh_config.d" / "hosts.conf", "Host a\n  Port 9999\n")
    assert lookup("a")["port"] == "2400"


def test_system_file_may_not_include_from_home(home: Path, system: Path) -> None:
    write(system, "Host *\n  Include ~/.ssh/extra\n")
    assert load_error() == (f"ssh config {system} line 2: bad include path ~/.ssh/extra "
                            "(no ~ in the system file)")


def test_a_system_path_that_is_no_file_is_skipped(home: Path, system: Path) -> None:
    system.mkdir()
    user_config(home, "Host a\n  Port 2\n")
    assert lookup("a")["port"] == "2"


# ---------------------------------------------------------------- Match

def test_match_host_and_originalhost(home: Path) -> None:
    user_config(home, "Host a\n  HostName real.example\n"
                      "Match host real.example\n  User byhost\n"
                      "Match originalhost a\n  Port 2222\n"
                      "Match originalhost real.example\n  Compression yes\n"
                      "MATCH HOST *,!real.example ORIGINALHOST b\n  Port 2323\n")
    a, b = lookup("a"), lookup("b")
    assert (a["user"], a["port"]) == ("byhost", "2222") and "compression" not in a
    assert b["port"] == "2323" and "user" not in b


def test_match_exec_in_an_included_file_gets_invoke(home: Path, tmp_path: Path) -> None:
    """~/.ssh/config itself has no `Match exec`, so paramiko is loaded without invoke; the included
    file's line brings it back (in a fresh interpreter, stdin closed: invoke reads it)."""
    pytest.importorskip("invoke")
    write(home / ".ssh" / "exec.conf", 'Match exec "true"\n  User z\nMatch exec "false"\n  Port 2\n')
    user_config(home, "Include exec.conf\n")
    code = ("import sys, pathlib; from remote_http_launcher.ssh import config; import paramiko.config; "
            f"config.SYSTEM_SSH_CONFIG = pathlib.Path({str(tmp_path / 'none')!r}); "
            "before = paramiko.config.invoke is None; options = config.resolve(config.load_ssh_config(), 'x').options; "
            "print(before, paramiko.config.invoke is None, options['user'], options.get('port'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "z", "None"]


def test_match_exec_without_invoke_is_one_line(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko.config

    user_config(home, 'Match exec "true"\n  User z\n')
    config = load_ssh_config()
    monkeypatch.setattr(paramiko.config, "invoke", None)
    monkeypatch.setattr(paramiko.config, "invoke_import_error", ImportError("No module named 'invoke'"))
    with pytest.raises(HostError, match=r"^ssh x: ssh config: a Match exec line needs the Python package 'invoke'"):
        resolve(config, "x")


# ---------------------------------------------------------------- unsupported options

def test_unsupported_options_are_ignored_with_a_debug_line(home: Path, system: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Including those paramiko would act on and fail with (CanonicalizeHostname without CanonicalDomains)."""
    user_config(home, "Host a\n  SendEnv LANG LC_*\n  CanonicalizeHostname yes\n  ForwardAgent yes\n  Port 2\n")
    write(system, "Host *\n  GSSAPIKeyExchange yes\n")
    caplog.set_level(logging.DEBUG, logger="remote_http_launcher.ssh")
    options = lookup("a")
    assert options["port"] == "2"
    assert not {"sendenv", "canonicalizehostname", "forwardagent", "gssapikeyexchange"} & set(options)
    logged = [record.getMessage() for record in caplog.records if record.name == "remote_http_launcher.ssh"]
    assert "ssh config ~/.ssh/config line 2: SendEnv is not supported; ignored" in logged
    assert "ssh config ~/.ssh/config line 4: ForwardAgent is not supported; ignored" in logged
    assert f"ssh config {system} line 2: GSSAPIKeyExchange is not supported; ignored (Kerberos key exchange, a " \
        "Debian and Fedora patch to OpenSSH; Kerberos logs in by gssapi-with-mic with GSSAPIAuthentication yes)" \
        in logged
    assert all(record.levelno == logging.DEBUG for record in caplog.records if record.name.endswith(".ssh"))


def test_unsupported_match_criterion_makes_its_block_apply_to_no_host(home: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    user_config(home, "Match tagged work\n  User tagged\nMatch localnetwork 10.0.0.0/8 host *\n  Port 2\n"
                      "Host *\n  User everyone\n")
    caplog.set_level(logging.DEBUG, logger="remote_http_launcher.ssh")
    options = lookup("a")
    assert options["user"] == "everyone" and "port" not in options
    assert any("Match tagged is not supported" in record.getMessage() for record in caplog.records)


def test_openssh_aliases_of_supported_options(home: Path) -> None:
    user_config(home, "Host a\n  ChallengeResponseAuthentication no\n  KbdInteractiveAuthentication yes\n")
    assert lookup("a")["kbdinteractiveauthentication"] == "no"


def test_every_option_read_in_ssh_is_supported() -> None:
    """Reading a new option in ssh/ needs it in SUPPORTED_OPTIONS too (else it never reaches the Endpoint)."""
    read = {"pubkeyauthentication", "kbdinteractiveauthentication", "passwordauthentication"}  # auth.py's switches
    pattern = re.compile(r"""(?:\.option|\.flag|\.values|options\.get)\(\s*["']([a-z]+)["']""")
    for path in SSH_PACKAGE.glob("*.py"):
        read |= set(pattern.findall(path.read_text()))
    assert {"hostname", "port", "user", "proxyjump", "identityfile", "certificatefile"} <= read  # the scan works
    assert read - SUPPORTED_OPTIONS == set()


# ---------------------------------------------------------------- end to end, real sshd

def test_alias_only_in_an_included_file_connects(sshd: SSHServer, client_home: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The alias's block lives in ~/.ssh/hosts/*.conf, its User in the system file."""
    system = write(tmp_path / "etc-ssh" / "ssh_config", f"Host *\n  User {sshd.user}\n  SendEnv LANG\n")
    monkeypatch.setattr(ssh_config_module, "SYSTEM_SSH_CONFIG", system)
    config = sshd.write_ssh_config(client_home, ALIAS)
    block = "".join(line + "\n" for line in config.read_text().splitlines() if not line.strip().startswith("User "))
    write(client_home / ".ssh" / "hosts" / f"{ALIAS}.conf", block)
    config.write_text("# every host of mine\nInclude hosts/*.conf\n")
    with SSHHost.connect(ALIAS) as host:
        assert host.home == str(sshd.home)
        result = host.run_script('echo "$(id -un)"', [])
        assert (result.returncode, result.stdout) == (0, f"{sshd.user}\n")


def test_a_misspelt_alias_gets_did_you_mean(client_home: Path, tmp_path: Path) -> None:
    """A name that is no Host of ~/.ssh/config goes to DNS as it is; when it does not resolve and a Host is
    close to it, the error says which (launches and `check` alike)."""
    (client_home / ".ssh").mkdir(mode=0o700)
    (client_home / ".ssh" / "config").write_text("Host remote-lan\n  HostName 127.0.0.1\n  Port 1\n"
                                                  "Host *.internal\n  User me\n")
    with pytest.raises(HostError) as info:
        SSHHost.connect("remote-lna.invalid")
    assert "did you mean" not in str(info.value)  # nothing close: DNS's word alone
    with pytest.raises(HostError) as info:
        SSHHost.connect("remote-lna")
    assert str(info.value).startswith("ssh ") and "connect: cannot resolve host name 'remote-lna' (" in str(info.value)
    assert str(info.value).endswith("); not a Host in ~/.ssh/config; did you mean remote-lan?")
    config = tmp_path / "config.yaml"
    config.write_text("hostname: remote-lna\nworkdir: /w\nkey: k\ncommand: serve\n")
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", "check", str(config)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 1
    assert "not a Host in ~/.ssh/config; did you mean remote-lan?" in result.stdout
