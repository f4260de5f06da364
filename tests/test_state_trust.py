"""Local state another user could control is refused on every path, the warm one included.

Whoever controls the client directory controls where our clients connect: the warm path hands out
the port a client file names. So a client directory or file that is a symlink, belongs to another
user, or is writable by others is refused with one line naming the path and the fix.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from remote_http_launcher import LauncherError, run, statefiles
from tests import posix
from tests.conftest import DEMO_SERVICE, ROOT, cli, wait_for
from tests.sshd import kill_uid

NOBODY = 65534
Run = Callable[..., subprocess.CompletedProcess[str]]


def refused(result: subprocess.CompletedProcess[str], path: Path, problem: str) -> bool:
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result.returncode == 1 and line.startswith(f"error: client {'file' if path.suffix else 'directory'} "
                                                       f"{path} {problem}") and "--connection-dir" in line


def planted_client_file(directory: Path, port: int = 22) -> Path:
    """What an attacker leaves: a client file pointing our clients at their port."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo-localhost.json"
    path.write_text(json.dumps({"hostname": "localhost", "port": port}))
    return path


def test_a_symlinked_client_directory_is_refused(rhl_dir: Path, tmp_path: Path,
                                                 config_file: Callable[..., Path]) -> None:
    elsewhere = tmp_path / "someone-elses"
    planted_client_file(elsewhere)
    rhl_dir.mkdir(parents=True)
    (rhl_dir / "client").symlink_to(elsewhere)
    result = cli(config_file(), "--json")
    assert refused(result, rhl_dir / "client", "is a symbolic link")
    assert json.loads(result.stdout)["exit"] == 1  # `--json`'s failure document, not the planted payload
    assert sorted(p.name for p in elsewhere.iterdir()) == ["demo-localhost.json"]  # nothing written there
    assert not (rhl_dir / "server").exists()  # nothing launched


def test_a_client_directory_of_another_user_is_refused_even_on_the_warm_path(
        rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    if posix.STRIPPED or posix.geteuid() != 0:
        pytest.skip("needs root, and user ids (not in the POSIX-stripped run)")
    client = rhl_dir / "client"
    planted_client_file(client)
    posix.chown(client, NOBODY, NOBODY)
    for command in ([], ["status"]):
        result = cli(*command, config_file())
        assert refused(result, client, f"belongs to another user (uid {NOBODY})"), result.stderr


def test_a_client_directory_others_may_write_is_refused(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    client = rhl_dir / "client"
    planted_client_file(client)
    client.chmod(0o777)
    result = cli(config_file())
    assert refused(result, client, "may be written by other users (mode 777)")


def test_a_symlinked_client_file_is_refused(rhl_dir: Path, tmp_path: Path, config_file: Callable[..., Path]) -> None:
    target = planted_client_file(tmp_path / "planted")
    client = rhl_dir / "client"
    client.mkdir(parents=True, mode=0o700)
    (client / "demo-localhost.json").symlink_to(target)
    result = cli(config_file())
    assert refused(result, client / "demo-localhost.json", "is a symbolic link")


def test_a_readable_client_directory_is_made_private(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    client = rhl_dir / "client"
    client.mkdir(parents=True)
    client.chmod(0o755)  # readable, not writable, by others: no way in, but private from now on
    assert cli(config_file()).returncode == 0
    assert client.stat().st_mode & 0o777 == 0o700


def test_a_state_directory_that_cannot_be_looked_at_is_one_line(tmp_path: Path,
                                                                config_file: Callable[..., Path]) -> None:
    """What a plain user meets in a directory it may not enter (as root: a path through a symlink loop)."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = cli(config_file(), "--connection-dir", str(loop / "client"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: client directory {loop / 'client'}: Too many levels of symbolic links; "
                             "use a directory of your own (--connection-dir or $REMOTE_HTTP_LAUNCHER_DIR)\n")


@pytest.mark.parametrize("problem", ["symlink", "writable"])
def test_every_path_refuses_an_untrusted_client_directory(problem: str, rhl_dir: Path, tmp_path: Path,
                                                          config_file: Callable[..., Path]) -> None:
    """The warm path (a served client file), `status`, `stop` and the API's run() alike."""
    config = config_file()
    assert cli(config).returncode == 0  # the service runs; its client file makes the next run a warm one
    client = rhl_dir / "client"
    if problem == "symlink":
        elsewhere = tmp_path / "elsewhere"
        client.rename(elsewhere)
        client.symlink_to(elsewhere)
        expected = "is a symbolic link"
    else:
        client.chmod(0o777)
        expected = "may be written by other users (mode 777)"
    for command in ([], ["status"], ["stop"]):
        assert refused(cli(*command, config), client, expected), command
    with pytest.raises(LauncherError) as info:
        run(str(config))
    assert str(info.value).startswith(f"client directory {client} {expected}, so another user could redirect")


def as_user(uid: int, python: str, *args: str, env: dict[str, str] | None = None,
            gid: int | None = None) -> subprocess.CompletedProcess[str]:
    """`python` (with this checkout and the test interpreter's packages) run by the plain user `uid`."""
    return subprocess.run(user_argv(uid, python, *args, gid=gid), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd="/", env=user_env(env))


def user_argv(uid: int, python: str, *args: str, gid: int | None = None) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}", "--clear-groups", "--", python,
            *args]


def user_env(env: dict[str, str] | None) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *(entry for entry in sys.path if entry and Path(entry).is_dir())])
    return {**(env or {}), "PYTHONPATH": path, "PATH": os.environ["PATH"]}


def as_nobody(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return as_user(NOBODY, python, *args, env=env)


def python_for(uid: int, gid: int | None = None) -> str | None:
    """An interpreter the plain user may run that imports the launcher (the test one may live in root's home)."""
    for python in (sys.executable, "/usr/bin/python3"):
        if as_user(uid, python, "-c", "import remote_http_launcher.cli", gid=gid).returncode == 0:
            return python
    return None


def python_for_nobody() -> str | None:
    return python_for(NOBODY)


def test_a_plain_user_gets_one_line_not_a_permission_error(config_file: Callable[..., Path]) -> None:
    """As a non-root user: a client directory inside another user's private directory, or a symlink to one."""
    if posix.STRIPPED or posix.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to become another user) and setpriv")
    python = python_for_nobody()
    if python is None:
        pytest.skip("no python that a plain user may run imports the launcher")
    mine = Path(tempfile.mkdtemp(prefix="rhl-nobody-"))  # outside pytest's root-only tmp directory
    try:
        config = mine / "service.yaml"
        config.write_text(config_file().read_text())
        private = mine / "roots"
        planted_client_file(private / "client")
        private.chmod(0o700)  # root's: the plain user may not look inside
        home = mine / "home"
        home.mkdir()
        (home / "client").symlink_to(private / "client")
        posix.chown(home, NOBODY, NOBODY)
        mine.chmod(0o755)
        env = {"HOME": str(home), "REMOTE_HTTP_LAUNCHER_DIR": str(home)}

        result = as_nobody(python, "-m", "remote_http_launcher", str(config), "--connection-dir",
                           str(private / "client"), env=env)
        assert result.returncode == 1 and "internal error" not in result.stderr, result.stderr
        assert result.stderr == (f"error: client directory {private / 'client'}: Permission denied; use a directory "
                                 "of your own (--connection-dir or $REMOTE_HTTP_LAUNCHER_DIR)\n")
        for command in ([], ["status"]):
            result = as_nobody(python, "-m", "remote_http_launcher", *command, str(config), env=env)
            assert refused(result, home / "client", "is a symbolic link"), result.stderr
            assert "internal error" not in result.stderr
        assert not (home / "server").exists()  # nothing launched
    finally:
        shutil.rmtree(mine)


# ---------------------------------------------------------------- the whole state tree, against a second local user

class LocalUser(NamedTuple):
    name: str
    uid: int
    gid: int


class Users(NamedTuple):
    """Two throwaway plain users (root would trust root's own files) and the python both can run."""

    attacker: LocalUser
    victim: LocalUser
    python: str


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    if posix.STRIPPED or posix.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("useradd")):
        pytest.skip("needs root (to create users), useradd and setpriv; not in the POSIX-stripped run")
    made: list[LocalUser] = []
    try:
        for role in ("atk", "vic"):
            name = f"rhl{role}{secrets.token_hex(4)}"
            subprocess.run(["useradd", "-M", "-l", "-U", "-d", "/nonexistent", "-s", "/bin/sh", name], check=True,
                           capture_output=True)
            entry = posix.pwd.getpwnam(name)
            made.append(LocalUser(name, entry.pw_uid, entry.pw_gid))
        python = python_for(made[1].uid, made[1].gid)
        if python is None:
            pytest.skip("no python that a plain user may run imports the launcher")
        yield Users(made[0], made[1], python)
    finally:
        for user in made:
            kill_uid(user.uid)  # what a failed test left running
            subprocess.run(["userdel", user.name], capture_output=True)


class Scene(NamedTuple):
    """A /tmp-like directory (root's, 1777) as in the README's transcripts, and the victim's home in it."""

    shared: Path
    home: Path
    marker: Path  # what the attacker's command creates, as the victim, in the victim's private home

    def own(self, path: Path, user: LocalUser, mode: int) -> Path:
        """Make `path` a directory of `user` (as if they had made it) with `mode`."""
        path.mkdir(exist_ok=True)
        posix.chown(path, user.uid, user.gid)
        path.chmod(mode)
        return path

    def plant(self, path: Path, data: bytes, user: LocalUser) -> None:
        path.write_bytes(data)
        posix.chown(path, user.uid, user.gid)
        path.chmod(0o644)


@pytest.fixture
def scene(users: Users) -> Iterator[Scene]:
    shared = Path(tempfile.mkdtemp(prefix="rhl-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        home = shared / "victim-home"
        home.mkdir()
        posix.chown(home, users.victim.uid, users.victim.gid)
        home.chmod(0o700)
        yield Scene(shared, home, home / "pwned")
    finally:
        shutil.rmtree(shared)


def victim_runs(users: Users, scene: Scene, base: Path | None, *args: str,
                home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as the victim, with `base` as REMOTE_HTTP_LAUNCHER_DIR (None: the default, in `home`)."""
    env = {"HOME": str(home or scene.home)} | ({"REMOTE_HTTP_LAUNCHER_DIR": str(base)} if base else {})
    return as_user(users.victim.uid, users.python, "-m", "remote_http_launcher", *args, gid=users.victim.gid,
                   env=env)


def one_line_refusal(result: subprocess.CompletedProcess[str], start: str, problem: str) -> bool:
    return (result.returncode == 1 and len(result.stderr.splitlines()) == 1 and result.stderr.startswith(start)
            and problem in result.stderr and "$REMOTE_HTTP_LAUNCHER_DIR" in result.stderr)


def state_base(scene: Scene, users: Users, layout: str) -> tuple[Path, Callable[[str, Path], tuple[str, str]]]:
    """The victim's REMOTE_HTTP_LAUNCHER_DIR and, for a state directory in it, the refusal expected.

    "attacker-made": the attacker made the directory first (a /tmp name is anyone's to take);
    "shared-sticky": a sticky directory open to all (as /tmp itself), where the attacker made
    brokers/ and cache/ before the victim's first run."""
    if layout == "attacker-made":
        base = scene.own(scene.shared / "rd", users.attacker, 0o777)
        return base, lambda what, path: (f"error: {what} {path}: the directory {base} above it",
                                         f"belongs to another user (uid {users.attacker.uid})")
    base = scene.shared / "pub"
    base.mkdir()
    base.chmod(0o1777)
    return base, lambda what, path: (f"error: {what} {path} belongs to another user (uid {users.attacker.uid})",
                                     "remove it")


POISONED_CONFIG = """workdir: ~/work
hostname: 192.0.2.1
ssh_hostname: victimhost
key: poisoned
command: python3 -m http.server --bind {network_interface} 0
connection_persist: 0
"""


@pytest.mark.parametrize("layout", ["attacker-made", "shared-sticky"])
def test_a_planted_parse_cache_is_refused_and_its_command_never_runs(
        layout: str, users: Users, scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker's cache entry has the victim's config text and a parse without `hostname`: used, it would
    run the attacker's command here, as the victim."""
    from remote_http_launcher.config import _parse_cache_file

    base, expected = state_base(scene, users, layout)
    config = scene.home / "remote.yaml"
    config.write_text(POISONED_CONFIG)
    posix.chown(config, users.victim.uid, users.victim.gid)
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(base))
    entry = Path(_parse_cache_file(str(config)))
    scene.own(entry.parent, users.attacker, 0o777)
    forged = {"workdir": "~/work", "key": "poisoned", "command": f"touch {scene.marker}"}
    scene.plant(entry, json.dumps({"text": POISONED_CONFIG, "data": forged}).encode(), users.attacker)

    result = victim_runs(users, scene, base, str(config))
    assert not scene.marker.exists()
    assert one_line_refusal(result, *expected("parse cache directory", entry.parent)), result.stderr


BROKER = """import os, sys
from multiprocessing.connection import Listener

class Command:
    def __reduce__(self):
        return os.system, ("touch " + sys.argv[3],)

os.umask(0)
with Listener(sys.argv[1], authkey=bytes.fromhex(sys.argv[2])) as listener:
    open(sys.argv[4], "w").close()
    with listener.accept() as conn:
        open(sys.argv[4] + ".connected", "w").close()
        conn.recv()
        conn.send(("ok", Command()))
"""


@pytest.mark.parametrize("layout", ["attacker-made", "shared-sticky"])
def test_a_planted_broker_is_refused_before_connecting(layout: str, users: Users, scene: Scene,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker's lock names their own socket and their key proves to it; a reply unpickled there would
    run their command as the victim."""
    from remote_http_launcher.broker.registry import BrokerFiles

    base, expected = state_base(scene, users, layout)
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(base))
    monkeypatch.setenv("HOME", str(scene.home))  # the broker's name hashes the victim's (absent) ~/.ssh/config
    files = BrokerFiles.for_target("victimhost")
    scene.own(Path(files.lock).parent, users.attacker, 0o777)
    authkey = secrets.token_bytes(32)
    scene.plant(Path(files.key), authkey, users.attacker)
    scene.plant(Path(files.lock), json.dumps({"pid": 1, "token": "t", "address": str(files.socket)}).encode(),
                users.attacker)
    ready = scene.shared / "ready"
    listener = subprocess.Popen(user_argv(users.attacker.uid, users.python, "-c", BROKER, str(files.socket),
                                          authkey.hex(), str(scene.marker), str(ready), gid=users.attacker.gid),
                                env=user_env(None), cwd="/", stdin=subprocess.DEVNULL)
    try:
        wait_for(ready.exists, 30, "the attacker's broker")
        for command in (["list", "--host", "victimhost"], ["connections"], ["disconnect"]):
            result = victim_runs(users, scene, base, *command)
            assert not scene.marker.exists()
            assert not Path(f"{ready}.connected").exists()
            assert one_line_refusal(result, *expected("broker directory", Path(files.directory))), \
                (command, result.stderr)
    finally:
        listener.kill()
        listener.wait()


def test_a_planted_server_directory_is_refused(users: Users, scene: Scene) -> None:
    """Its status files name the processes `stop` signals, and where clients connect."""
    base, expected = state_base(scene, users, "shared-sticky")
    server = scene.own(base / "server", users.attacker, 0o777)
    scene.plant(server / "demo.json", json.dumps({"status": "running", "pid": 1, "port": 22}).encode(),
                users.attacker)
    for command in ("status", "stop"):
        result = victim_runs(users, scene, base, command, str(victim_config(users, scene)))
        assert one_line_refusal(result, *expected("server directory", server)), result.stderr


def test_a_state_directory_under_another_users_directory_is_refused(users: Users, scene: Scene) -> None:
    """Every state directory the victim's own, private, but inside one the attacker owns: they could rename it
    away and put theirs in its place. Likewise through a symbolic link of theirs (in a sticky directory)."""
    theirs = scene.own(scene.shared / "theirs", users.attacker, 0o755)
    base = scene.own(theirs / "state", users.victim, 0o700)
    scene.own(base / "client", users.victim, 0o700)
    link = scene.shared / "link"
    link.symlink_to(scene.home)
    posix.lchown(link, users.attacker.uid, users.attacker.gid)
    config = victim_config(users, scene)
    for state, above in ((base, theirs), (link / "state", link)):
        for command in ([], ["status"]):
            result = victim_runs(users, scene, state, *command, str(config))
            assert one_line_refusal(result, "error: ", f"the directory {above} above it belongs to another user "
                                    f"(uid {users.attacker.uid})"), result.stderr


def test_a_plain_users_own_state_directory_in_a_sticky_directory_works(users: Users, scene: Scene) -> None:
    """The checks refuse what another user controls, not a plain user's ordinary setup: a cold run, a warm one
    (from the parse cache), and stop."""
    base = scene.shared / "rd"
    config = victim_config(users, scene)
    try:
        for _ in range(2):
            result = victim_runs(users, scene, base, str(config))
            assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (base / "cache").iterdir())[-1] == "secret"
        assert base.stat().st_uid == users.victim.uid
    finally:
        assert victim_runs(users, scene, base, "stop", str(config)).returncode == 0


def test_the_directories_above_the_home_directory_are_the_systems(users: Users, scene: Scene) -> None:
    """As OpenSSH's StrictModes: what lies above $HOME is not checked (in a user namespace, /home may show as
    nobody's), while the home directory and everything below it is."""
    system = scene.own(scene.shared / "home", users.attacker, 0o755)
    home = scene.own(system / "victim", users.victim, 0o700)
    config = victim_config(users, scene)
    try:
        result = victim_runs(users, scene, None, str(config), home=home)
        assert result.returncode == 0, result.stderr
        assert (home / ".remote-http-launcher" / "client" / "demo.json").exists()
        home.chmod(0o777)
        result = victim_runs(users, scene, None, "status", str(config), home=home)
        assert one_line_refusal(result, "error: ", f"the directory {home} above it may be written by other users "
                                "(mode 777)"), result.stderr
    finally:
        home.chmod(0o700)
        assert victim_runs(users, scene, None, "stop", str(config), home=home).returncode == 0


def victim_config(users: Users, scene: Scene) -> Path:
    """The demo service, as the victim (by the system's python: the shell refuses the test's one, which
    lies in root's private home, to a plain user)."""
    config = scene.home / "demo.yaml"
    config.write_text(json.dumps({"workdir": str(scene.home / "work"), "key": "demo",
                                  "command": f"/usr/bin/python3 {DEMO_SERVICE} --status-file {{status_file}} "
                                             "--host {network_interface}", "handshake": "healthcheck"}))
    posix.chown(config, users.victim.uid, users.victim.gid)
    return config


# ---------------------------------------------------------------- the parse cache is this user's alone

@pytest.mark.parametrize("forgery", ["unsealed", "sealed-by-another-user"])
def test_a_parse_cache_entry_we_did_not_write_is_ignored(forgery: str, rhl_dir: Path, client_home: Path,
                                                         tmp_path: Path, config_file: Callable[..., Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry with the config's text but another parse (no `hostname`, the attacker's command) is used
    only if this user sealed it: the config's own SSH host is used instead (it refuses the connection)."""
    from remote_http_launcher.config import _parse_cache_file

    assert cli(config_file()).returncode == 0  # a run that succeeded: the cache has its secret (checked below)
    ssh = client_home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "config").write_text("Host unreachable\n    HostName 127.0.0.1\n    Port 1\n")
    config = tmp_path / "remote.yaml"
    text = POISONED_CONFIG.replace("victimhost", "unreachable")
    config.write_text(text)
    marker = tmp_path / "pwned"
    payload = statefiles.encode({"text": text, "data": {"workdir": str(tmp_path), "key": "poisoned",
                                                        "command": f"touch {marker}"}})
    entry = Path(_parse_cache_file(str(config)))
    if forgery == "unsealed":
        entry.write_bytes(payload)
    else:  # another user's launcher sealed it, with their secret, in their own state directory
        other = tmp_path / "other-user"
        monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(other))
        theirs = _parse_cache_file(str(config))
        statefiles.write_sealed(theirs, payload)
        assert statefiles.read_sealed(theirs, "parse cache") == payload  # valid there
        shutil.copyfile(theirs, entry)
        monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(rhl_dir))
    result = cli(config)
    assert not marker.exists()
    assert result.returncode == 1 and "ssh unreachable (127.0.0.1:1)" in result.stderr, result.stderr
    assert (rhl_dir / "cache" / "secret").stat().st_mode & 0o777 == 0o600  # ignored for its seal, not for want of one
