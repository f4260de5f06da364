"""paramiko's and sshtunnel's private members: used in ssh/_paramiko.py only, and still there.

An upgrade of either may drop a private member without notice; these tests
name what went missing instead of letting pipelined SFTP or the tunnel break
at run time, keep PRIVATE_MEMBERS in step with the shim, and keep every other
module on the shim's public wrappers (and on its import of paramiko, which
keeps `invoke` out).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import remote_http_launcher
from remote_http_launcher.ssh import _paramiko
from tests.conftest import ROOT
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

PACKAGE = Path(remote_http_launcher.__file__).resolve().parent
SHIM = PACKAGE / "ssh" / "_paramiko.py"
WRAPPED = ("paramiko", "sshtunnel")
PRIVATE_NAMES = ("_send_user_message", "_async_request", "_read_response", "_from_msg", "_ForwardHandler",
                 "_ThreadingForwardServer", "_send_packet", "_read_packet", "_send_version")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_modules() -> Iterator[Path]:
    """Every module of the package but the shim."""
    return (path for path in sorted(PACKAGE.rglob("*.py")) if path != SHIM)


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a module outside `if TYPE_CHECKING:` blocks (those never run), in source order."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for statement in node.orelse:
            yield from _runtime_nodes(statement)
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _runtime_nodes(child)


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


# ---------------------------------------------------------------- what the shim relies on

def test_private_members_still_exist() -> None:
    missing = _paramiko.missing_private_members()
    assert missing == [], (
        f"the installed paramiko/sshtunnel no longer have {len(missing)} private member(s) that "
        f"remote_http_launcher/ssh/_paramiko.py uses: {', '.join(missing)}. Adapt the shim, or pin the "
        "versions in pyproject.toml.")


def test_missing_private_members_names_what_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_paramiko, "PRIVATE_MEMBERS", (
        *_paramiko.PRIVATE_MEMBERS, ("paramiko.sftp_client.SFTPClient", "_gone"),
        ("paramiko.no_such_module.Thing", "_x"), ("sshtunnel", "_NoSuchClass")))
    assert _paramiko.missing_private_members() == [
        "paramiko.sftp_client.SFTPClient._gone", "paramiko.no_such_module.Thing._x", "sshtunnel._NoSuchClass"]


def test_private_members_list_matches_the_shim() -> None:
    """Each listed member is used by the shim, and each private member the shim uses is listed."""
    tree = ast.parse(SHIM.read_text(encoding="utf-8"))
    listing = next(node for node in tree.body if isinstance(node, ast.AnnAssign)
                   and isinstance(node.target, ast.Name) and node.target.id == "PRIVATE_MEMBERS")
    inside_listing = {id(node) for node in ast.walk(listing)}
    used: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in inside_listing:
            continue
        if isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used.update(alias.name for alias in node.names)
    overridden = {item.name for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
                  for item in cls.body if isinstance(item, ast.FunctionDef)}
    listed = {attribute for _, attribute in _paramiko.PRIVATE_MEMBERS}
    unused = sorted(listed - used - overridden)
    assert not unused, f"PRIVATE_MEMBERS lists members _paramiko.py no longer uses: {unused}"
    unlisted = sorted({name for name in used | overridden if _is_private(name)} - listed)
    assert not unlisted, f"_paramiko.py uses private members missing from PRIVATE_MEMBERS: {unlisted}"


# ---------------------------------------------------------------- nobody else touches them

def test_only_the_shim_touches_paramiko_and_sshtunnel_internals() -> None:
    problems = []
    for path in _package_modules():
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent)
        problems += [f"{where}: names {name}" for name in PRIVATE_NAMES if name in source]
        tree = ast.parse(source, str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in WRAPPED:
                problems += [f"{where}:{node.lineno}: imports private {alias.name} from {node.module}"
                             for alias in node.names if _is_private(alias.name)]
            elif isinstance(node, ast.Attribute) and (
                    (_root_name(node) in WRAPPED and _is_private(node.attr))
                    or (node.attr == "invoke" and _root_name(node) == "paramiko")):
                problems.append(f"{where}:{node.lineno}: uses {ast.unparse(node)}")
    assert not problems, "private paramiko/sshtunnel members outside ssh/_paramiko.py:\n" + "\n".join(problems)


def test_paramiko_and_sshtunnel_are_imported_through_the_shim_only() -> None:
    """A direct import elsewhere could load paramiko before the shim hides invoke (type-only imports are fine)."""
    problems = []
    for path in _package_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            problems += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: imports {module}"
                         for module in modules if module.split(".")[0] in (*WRAPPED, "invoke")]
    assert not problems, "import these through remote_http_launcher/ssh/_paramiko.py:\n" + "\n".join(problems)


# ---------------------------------------------------------------- invoke and sshtunnel stay out

def _probe(home: Path, code: str) -> list[str]:
    """Run `code` in a fresh interpreter with HOME=home; the words it prints."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_ssh_package_imports_nothing(tmp_path: Path) -> None:
    code = "import sys, remote_http_launcher.ssh; print('paramiko' in sys.modules, 'sshtunnel' in sys.modules)"
    assert _probe(tmp_path, code) == ["False", "False"]


def test_paramiko_loads_without_importlib_metadata_and_knows_its_version(tmp_path: Path) -> None:
    """Its version (sent in every SSH banner) read from its dist-info, as importlib.metadata reads it; that
    module (~45 ms) is not loaded for it, and anything importing it later gets the real one."""
    code = ("import sys; from remote_http_launcher.ssh._paramiko import paramiko; "
            "print('importlib.metadata' in sys.modules, paramiko.__version__); "
            "import importlib.metadata as real; print(real.version('paramiko'), real.distribution('paramiko').name)")
    loaded, version, real_version, name = _probe(tmp_path, code)
    assert loaded == "False" and version == real_version and name == "paramiko"
    # a name without a dist-info of that name beside it (the distribution is remote-http-launcher): asked
    code = ("from remote_http_launcher.ssh._paramiko import _own_version; import importlib.metadata as real; "
            "print(_own_version('remote_http_launcher'), real.version('remote_http_launcher'))")
    ours, real_ours = _probe(tmp_path, code)
    assert ours == real_ours


def test_invoke_stays_out_unless_match_exec(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    config = tmp_path / ".ssh" / "config"
    config.write_text("Host x\n  HostName y\n  # Match exec in a comment does not count\n")
    code = ("import sys; from remote_http_launcher.hosts.ssh import SSHHost; "
            "from remote_http_launcher.ssh.config import load_ssh_config; load_ssh_config(); "
            "print('invoke' in sys.modules, 'sshtunnel' in sys.modules); "
            "from remote_http_launcher.tunnels.forward import Tunnel; "
            "print('invoke' in sys.modules, 'sshtunnel' in sys.modules)")
    assert _probe(tmp_path, code) == ["False", "False", "False", "True"]

    if importlib.util.find_spec("invoke") is None:
        pytest.skip("invoke is not installed")
    later = ("import os, sys; from remote_http_launcher.ssh.config import load_ssh_config; "
             "import paramiko.config; print(paramiko.config.invoke is None); "
             f"os.environ['HOME'] = {str(tmp_path / 'later')!r}; load_ssh_config(); "
             "print(paramiko.config.invoke is None)")
    (tmp_path / "later" / ".ssh").mkdir(parents=True)
    (tmp_path / "later" / ".ssh" / "config").write_text("Match exec \"true\"\n  User z\n")
    assert _probe(tmp_path, later) == ["True", "False"]  # a later config with Match exec gets it back
    config.write_text("Host x\n  HostName y\nmatch   exec \"true\"\n  User z\n")
    code = ("import sys; from remote_http_launcher.ssh.config import load_ssh_config, resolve; "
            "print('invoke' in sys.modules, resolve(load_ssh_config(), 'x').user)")
    assert _probe(tmp_path, code) == ["True", "z"]


@pytest.fixture
def server(sshd: SSHServer) -> SSHServer:
    return sshd


def test_invoke_stays_out_after_connecting(ssh_config: Path, client_home: Path) -> None:
    code = ("import sys; from remote_http_launcher.hosts.ssh import SSHHost; host = SSHHost.connect("
            f"{ALIAS!r}, interactive=False); host.home; host.run_script('true', []); host.close(); "
            "print('invoke' in sys.modules, 'sshtunnel' in sys.modules)")
    assert _probe(client_home, code) == ["False", "False"]
