"""Guards on the package's shape: public names, one exception tree, no import cycles, a lean warm path."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import remote_http_launcher
from remote_http_launcher import errors
from remote_http_launcher.config import evaluate_key, load_config
from tests.conftest import probe_imports

PACKAGE = Path(remote_http_launcher.__file__).parent
NAME = "remote_http_launcher"
EXPORTED = [
    "AuthenticationError", "BrokerUnavailable", "ConfigError", "HandshakeError", "HostError", "HostKeyError",
    "LaunchError", "LauncherError", "NotRunningError", "ServiceFailedError", "TemplateError", "TunnelError",
    "UsageError",
    "__version__", "Configuration", "ServiceHandle", "launch", "logs", "main", "run", "status", "stop",
]
# What a warm run (client file present, service healthy) may import of the package: config, state files,
# handshake, and the front ends that call them (no template sandbox: the kept parse knows the key). Growing
# this set needs a reason.
WARM_PACKAGE_MODULES = {
    NAME, f"{NAME}._version", f"{NAME}.errors", f"{NAME}.cli", f"{NAME}.logsetup", f"{NAME}.progress",
    f"{NAME}.commands", f"{NAME}.commands.up", f"{NAME}.config", f"{NAME}.statefiles",
    f"{NAME}.clientfile", f"{NAME}.handshake", f"{NAME}.lazylog", f"{NAME}.locks", f"{NAME}.processes",
    f"{NAME}.records", f"{NAME}.jsontext",
}
WARM_FORBIDDEN = ("paramiko", "sshtunnel", "http.client", "dataclasses", "tempfile", "yaml", "subprocess",
                  "cryptography", "asyncio", "inspect", "ast", "hashlib", "hmac", "logging",
                  # json and re (jsontext.py, config.py's checks), socket with enum (handshake.py on _socket)
                  "json", "re", "socket", "enum", "selectors",
                  # shared libraries, half a millisecond each to load (jsontext.is_finite, the parse cache's name)
                  "math", "binascii", "select", "_struct",
                  # a millisecond each or so: the CLI's config warnings (a callback), the launch's try blocks
                  "warnings", "contextlib",
                  # a quarter of the interpreter's own start: records.py's NamedTuple, cache and namespaces
                  "collections", "functools", "types", "operator", "reprlib",
                  # a twentieth of a warm run or more each: records.py, progress.py, cli.parse, statefiles.py, config.py
                  "typing", "threading", "argparse", "pathlib", "urllib")
# A first launch on this machine runs `sh` (subprocess, hence threading); the rest stays out: PyYAML and the
# template sandbox too, for a plain config (plainyaml.py, templates/__init__.py).
COLD_FORBIDDEN = tuple(m for m in WARM_FORBIDDEN if m not in ("subprocess", "threading"))


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


# The units (top-level modules and subpackages) from the bottom up: a unit imports only units of lower
# layers (lazily or not, for types too), never one of its own layer or above. One layer a line.
LAYERS = [
    ["records"],
    ["_version", "errors", "lazylog", "jsontext", "background"],
    ["plainyaml", "progress", "processes", "shellwords", "templates"],
    ["statefiles", "prompts"],
    ["config", "scripts"],
    ["handshake", "logsetup", "ssh"],
    ["hosts"],
    ["locks", "schedulers"],
    ["service"],
    ["stock"],
    ["clientfile", "launcher"],
    ["tunnels"],
    ["broker", "keeper"],
    ["connect"],
    ["commands"],
    ["render", "arguments", "helpers"],
    ["api"],
    ["handle"],
    ["cli"],
    ["__main__"],
]
SHIM = f"{NAME}.ssh._paramiko"  # the one module that may use other packages' private names


def module_imports() -> dict[str, set[str]]:
    """Each package module and the package modules importing it runs: every import statement (in functions
    and under `if TYPE_CHECKING:` too), plus the packages above the target that the importer is not inside
    (importing `a.b.c` runs `a/__init__` and `a/b/__init__`). The root package is the facade over all of
    them: what it imports is the public API, and every module is inside it, so it is left out."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == NAME:
            continue
        graph[name] = set()
        for target, _ in _imports(name, path, modules):
            if target not in (name, NAME):
                graph[name] |= {target} | (_packages_above(target) - _packages_above(name) - {name})
    return graph


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.module, node.level)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.append((f"{base}.{alias.name}", []))
                elif base in modules:
                    found.append((base, [alias.name]))
    return found


def _packages_above(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def _module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _unit(module: str) -> str:
    return module.split(".")[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root, targets in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(targets)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_walk_sees_lazy_type_only_and_package_edges() -> None:
    graph = module_imports()
    assert f"{NAME}.connect" in graph[f"{NAME}.commands.up"]  # a function-level import
    assert f"{NAME}.tunnels.watch" in graph[f"{NAME}.keeper.process"]  # under TYPE_CHECKING
    assert f"{NAME}.hosts" in graph[f"{NAME}.connect"]  # the package of hosts.ssh, run first
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(module_imports()) == []


def test_units_import_only_lower_layers() -> None:
    """keeper and broker (one layer) never import each other; hosts/ imports nothing above it; the
    template sandbox is a leaf; the state machine knows no keeper, broker or front end."""
    layer = {unit: number for number, units in enumerate(LAYERS) for unit in units}
    graph = module_imports()
    assert {_unit(module) for module in graph} == set(layer)  # every unit has its place
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                    if _unit(module) != _unit(target) and layer[_unit(target)] >= layer[_unit(module)])
    assert upward == []


def test_no_module_uses_another_modules_private_names() -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    private = [f"{name} imports {target}.{taken}" for name, path in modules.items() if name != SHIM
               for target, names in _imports(name, path, modules) for taken in names
               if taken.startswith("_") and not taken.startswith("__") and target != SHIM]
    assert private == []


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


@pytest.mark.parametrize("options", [[], ["--log-level", "basic"]], ids=["plain", "log-level"])
def test_the_warm_path_imports_only_what_it_needs(rhl_dir: Path, config_file: Callable[..., Path],
                                                  options: list[str]) -> None:
    config = config_file()
    first = subprocess.run([sys.executable, "-m", NAME, str(config)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    result, stderr = probe_imports(config, *options)  # the warm path needs no other package (nor argparse)
    assert "reconnected" in stderr, stderr  # the warm path, not a relaunch
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


def test_a_kept_parse_gives_the_key_and_the_warnings_of_its_text(rhl_dir: Path,
                                                                 config_file: Callable[..., Path]) -> None:
    """A warm run evaluates no template (the key comes with the kept parse), yet says what a fresh parse of
    the same text says; the same text in another directory is parsed on its own (`config_dir`)."""
    path = config_file(key="svc-{config_dir.rsplit('/', 1)[-1]}", extra_note="unread")
    with pytest.warns(UserWarning, match="extra_note"):
        remote_http_launcher.run(path)
    with pytest.warns(UserWarning, match="extra_note"):
        cached = load_config(path, cache=True)
    assert cached.parsed is None and cached.known_key == f"svc-{path.parent.name}"
    other = path.parent / "elsewhere" / path.name
    other.parent.mkdir()
    other.write_text(path.read_text())
    with pytest.warns(UserWarning, match="extra_note"):
        moved = load_config(other, cache=True)
    assert moved.parsed is not None and moved.known_key is None and evaluate_key(moved) == "svc-elsewhere"
    with pytest.warns(UserWarning, match="extra_note"):
        remote_http_launcher.stop(path)


def test_a_first_local_launch_imports_only_what_it_needs(rhl_dir: Path, tmp_path: Path,
                                                         demo_config: Callable[..., dict[str, Any]]) -> None:
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(demo_config(), width=2**16))  # one line a field, as people write them
    result, stderr = probe_imports(config)
    assert "launched" in stderr or "ready" in stderr, stderr
    assert result["code"] == 0
    modules = set(result["modules"])
    assert [m for m in COLD_FORBIDDEN if m in modules] == []
    assert f"{NAME}.templates.sandbox" not in modules


# The modules loaded when a first local launch spawns its shell: what runs before that delays the service.
SPAWN_PROBE = """
import os, sys
at_spawn = []
real_spawn = os.posix_spawn
def spawn(*args, **kwargs):
    at_spawn.append(sorted(sys.modules))
    return real_spawn(*args, **kwargs)
os.posix_spawn = spawn
from remote_http_launcher.cli import main
code = main(sys.argv[1:])
print(repr({"code": code, "at_spawn": at_spawn}))
"""
# Before the spawn: `json` (with `re`, which brings `enum`) and `signal` (enums too) would cost as much as the
# interpreter's own start; the lock and the record's head are written by jsontext, the config checked without
# `re`, the signals reset through `_signal`.
SPAWN_FORBIDDEN = ("json", "re", "enum", "signal", "socket")


def test_a_first_local_launch_spawns_its_shell_before_json_and_re(
        rhl_dir: Path, tmp_path: Path, demo_config: Callable[..., dict[str, Any]]) -> None:
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(demo_config(network_interface="127.0.0.1", startup_timeout=30,
                                                 handshake={"path": "healthcheck", "parameters": {"a": "b"}}),
                                     width=2**16))
    probe = subprocess.run([sys.executable, "-S", "-c", SPAWN_PROBE, str(config)], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    result = ast.literal_eval(probe.stdout.splitlines()[-1])
    assert result["code"] == 0, probe.stderr
    assert len(result["at_spawn"]) == 1  # the launch shell, spawned once
    assert [m for m in SPAWN_FORBIDDEN if m in result["at_spawn"][0]] == []
