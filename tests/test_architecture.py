"""Guards on the package's shape: public names, one exception tree, no import cycles, a lean warm path."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import remote_http_launcher
from remote_http_launcher import errors
from remote_http_launcher.config import load_config

PACKAGE = Path(remote_http_launcher.__file__).parent
NAME = "remote_http_launcher"
EXPORTED = [
    "AuthenticationError", "BrokerUnavailable", "ConfigError", "HandshakeError", "HostError", "HostKeyError",
    "LaunchError", "LauncherError", "NotRunningError", "ServiceFailedError", "TemplateError", "TunnelError",
    "UsageError",
    "__version__", "Configuration", "ServiceHandle", "launch", "logs", "main", "run", "status", "stop",
]
# What a warm run (client file present, service healthy) may import of the package: config, templates,
# state files, handshake, and the front ends that call them. Growing this set needs a reason.
WARM_PACKAGE_MODULES = {
    NAME, f"{NAME}._version", f"{NAME}.errors", f"{NAME}.cli", f"{NAME}.logsetup", f"{NAME}.progress",
    f"{NAME}.commands", f"{NAME}.commands.up", f"{NAME}.config", f"{NAME}.templates", f"{NAME}.statefiles",
    f"{NAME}.clientfile", f"{NAME}.handshake", f"{NAME}.locks", f"{NAME}.processes",
}
WARM_FORBIDDEN = ("paramiko", "sshtunnel", "http.client", "dataclasses", "tempfile", "yaml", "subprocess",
                  "cryptography", "asyncio", "inspect")


def test_exported_names_are_pinned() -> None:
    assert sorted(remote_http_launcher.__all__) == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(remote_http_launcher, name) is not None, name


def test_every_exception_is_in_errors_and_exported() -> None:
    """One exception module: every LauncherError subclass anywhere in the package is defined there."""
    defined_elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(_base_name(b).endswith(("Error", "Exception"))
                                                      for b in node.bases) and path.name != "errors.py":
                defined_elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert defined_elsewhere == []
    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, errors.LauncherError)]
    assert {cls.__name__ for cls in classes} <= set(EXPORTED)
    assert issubclass(errors.LauncherError, RuntimeError)  # as in the original: `except RuntimeError` still works


def _base_name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


@pytest.mark.parametrize("cls", [value for value in vars(errors).values()
                                 if isinstance(value, type) and issubclass(value, errors.LauncherError)],
                         ids=lambda cls: cls.__name__)
def test_errors_survive_the_trip_from_the_keeper(cls: type[errors.LauncherError]) -> None:
    original = cls("svc: step on host: what happened", key="svc", host="ssh box", step="auth", log_tail="a | b")
    rebuilt = errors.LauncherError.from_dict(json.loads(json.dumps(original.to_dict())))
    assert type(rebuilt) is cls
    assert (str(rebuilt), rebuilt.key, rebuilt.host, rebuilt.step, rebuilt.log_tail) == \
        ("svc: step on host: what happened", "svc", "ssh box", "auth", "a | b")
    assert rebuilt.exit_code == cls.exit_code


def test_an_unknown_error_class_from_the_keeper_is_a_launcher_error() -> None:
    rebuilt = errors.LauncherError.from_dict({"error": "SystemExit", "message": "odd", "step": 3})
    assert type(rebuilt) is errors.LauncherError and str(rebuilt) == "odd" and rebuilt.step is None


def module_imports() -> dict[str, set[str]]:
    """Each package module and the package modules it imports anywhere (functions too), except under
    `if TYPE_CHECKING:` (never executed)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = set()
        for node in _executed_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(package, node.module, node.level)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def _module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _executed_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):  # its else branch runs
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_import_cycles() -> None:
    graph = module_imports()
    assert f"{NAME}.launcher" in graph and graph[f"{NAME}.keeper.process"]  # the walk sees the package
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start:
                    cycles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert cycles == []


def test_the_state_machine_knows_no_keeper_and_no_front_end() -> None:
    """launcher.py is driven by the API and by the keeper; it imports neither, nor the CLI."""
    graph = module_imports()
    reachable: set[str] = set()
    todo = [f"{NAME}.launcher"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    above = ("keeper", "cli", "api", "commands", "tunnels", "broker", "ssh", "hosts.ssh")
    assert not {m for m in reachable if m.startswith(tuple(f"{NAME}.{unit}" for unit in above))}


WARM_PROBE = """
import json, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
from remote_http_launcher.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "opened": opened}))
"""


def test_the_warm_path_imports_only_what_it_needs(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    first = subprocess.run([sys.executable, "-m", NAME, str(config)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    probe = subprocess.run([sys.executable, "-c", WARM_PROBE, str(config)], capture_output=True, text=True,
                           timeout=60)
    assert "reconnected" in probe.stderr, probe.stderr  # the warm path, not a relaunch
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert [path for path in result["opened"] if path.endswith(".sh")] == []  # no shell program is read
    modules = set(result["modules"])
    assert {m for m in modules if m == NAME or m.startswith(f"{NAME}.")} == WARM_PACKAGE_MODULES
    assert [m for m in WARM_FORBIDDEN if m in modules] == []


def test_a_config_parse_is_reused_only_for_the_same_text(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    path = config_file()
    assert load_config(path, cache=True).parsed is not None
    assert not (rhl_dir / "cache").exists()  # nothing kept until a run succeeded with it
    remote_http_launcher.run(path)
    cached = load_config(path, cache=True)
    assert cached.parsed is None and cached.raw == load_config(path).raw  # from the cache
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "startup_timeout": 7}))
    changed = load_config(path, cache=True)
    assert changed.parsed is not None and changed.startup_timeout == 7
    assert [p.stat().st_mode & 0o777 for p in (rhl_dir / "cache", *(rhl_dir / "cache").iterdir())] == \
        [0o700, 0o600, 0o600]  # the parse and the secret that seals it
