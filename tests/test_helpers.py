"""The rhl-* helpers (remote_http_launcher/helpers/) against the same helpers of the real 0.4.5 from PyPI, run
on the same state: services this launcher started on this machine, their status and connection files, and
persistent service directories. Same arguments, same output (NDJSON rows and their fields, tables, messages)
and exit codes; where ours differs on purpose (a PID now another program's is not signalled), that is shown."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import run
from tests.conftest import alive
from tests.interop import cached_venv
from tests.posix import SIGKILL, killpg

ORIGINAL = "remote-http-launcher==0.4.5"
#: The helpers of 0.4.5 that Seamless runs, which we ship; the others are documented as not shipped.
SHIPPED = ("rhl-ps", "rhl-ps-persistent", "rhl-logs", "rhl-inspect", "rhl-stop", "rhl-rm", "rhl-clear")
OURS = Path(sys.executable).parent  # the venv this project is installed in: its console scripts
Factory = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def original() -> Path:
    """The bin directory of a venv with 0.4.5 from PyPI (its rhl-* helpers)."""
    return cached_venv(sys.executable, (ORIGINAL,), "the rhl-* helpers comparison") / "bin"


def helper(bin_dir: Path, name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / name), *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def both(original: Path, name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Ours and 0.4.5's helper on the same state (read-only uses): the same stdout and exit code; ours."""
    ours, theirs = helper(OURS, name, *args), helper(original, name, *args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (name, args, ours.stderr,
                                                                                  theirs.stderr)
    return ours


def rows(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_helpers_seamless_runs_are_console_scripts() -> None:
    scripts = {entry.name: entry.value for entry in importlib.metadata.distribution("remote-http-launcher").entry_points
               if entry.group == "console_scripts"}
    assert set(SHIPPED) <= set(scripts)
    assert all(scripts[name].startswith("remote_http_launcher.helpers.") for name in SHIPPED)
    assert all((OURS / name).exists() for name in SHIPPED)


def launch(demo_config: Factory, key: str) -> dict[str, Any]:
    return dict(run(demo_config(key=key, meta={"service": "demo", "cluster": "here"})))


def test_ps_inspect_logs_read_our_state_as_the_original_does(rhl_dir: Path, demo_config: Factory,
                                                            original: Path) -> None:
    first, second = launch(demo_config, "demo-first"), launch(demo_config, "demo-second")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = json.loads((rhl_dir / "server" / "demo-second.json").read_text())
    (rhl_dir / "server" / "demo-gone.json").write_text(json.dumps(dict(record, pid=int(dead.stdout))))

    listed = rows(both(original, "rhl-ps", "--json"))
    assert [(row["key"], row["status"], row["live"], row["port"], row["meta"]["service"]) for row in listed] == [
        ("demo-first", "running", True, first["port"], "demo"), ("demo-gone", "stale", False, second["port"], "demo"),
        ("demo-second", "running", True, second["port"], "demo")]
    assert listed[0]["json_status"] == "running" and listed[0]["workdir"] == demo_config()["workdir"]
    for args in (["--status", "running", "--json"], ["--no-status", "--json"], ["--key"], [], ["--status", "stale"]):
        both(original, "rhl-ps", *args)

    clients = rows(both(original, "rhl-ps", "--client", "--json"))
    assert [(row["key"], row["port"], row["host"], row["ssh_host"]) for row in clients] == [
        ("demo-first", first["port"], "localhost", "localhost"), ("demo-second", second["port"], "localhost",
                                                                  "localhost")]
    for args in (["--client"], ["--client", "--host", "localhost", "--key"], ["--client", "--host", "elsewhere"]):
        both(original, "rhl-ps", *args)

    inspected = json.loads(both(original, "rhl-inspect", "demo-first").stdout)
    assert inspected["port"] == first["port"] and inspected["status"] == "running"
    assert json.loads(both(original, "rhl-inspect", "demo-first", "--with-mtime").stdout)["data"] == inspected
    log = both(original, "rhl-logs", "demo-first").stdout
    assert log == (rhl_dir / "server" / "demo-first.log").read_text() and log
    both(original, "rhl-logs", "demo-first", "--tail", "1")
    both(original, "rhl-logs", "demo-first", "--tail", "0")

    for name, args in (("rhl-inspect", ["absent"]), ("rhl-logs", ["absent"]), ("rhl-logs", ["../x"]),
                       ("rhl-ps", ["--bogus"]), ("rhl-ps", ["--host", "h"]), ("rhl-inspect", [])):
        assert both(original, name, *args).returncode == 1
        assert len(helper(OURS, name, *args).stderr.splitlines()) == 1  # one line, no traceback
    assert both(original, "rhl-ps", "--help").stdout.startswith("usage: rhl-ps ")


def test_stop_and_rm_do_what_the_originals_do(rhl_dir: Path, demo_config: Factory, original: Path) -> None:
    for tool in ("ours", "theirs"):
        launch(demo_config, f"demo-{tool}")
    for tool, bin_dir in (("ours", OURS), ("theirs", original)):
        key = f"demo-{tool}"
        pid = json.loads((rhl_dir / "server" / f"{key}.json").read_text())["pid"]
        done = helper(bin_dir, "rhl-stop", key, "demo-missing")
        assert (done.returncode, done.stdout) == (0, f"{key}: stopped\ndemo-missing: missing state\n"), done.stderr
        assert not alive(pid), f"{tool}'s stop of {key}"
        assert json.loads((rhl_dir / "server" / f"{key}.json").read_text())["status"] == "stale"
        again = helper(bin_dir, "rhl-stop", key)
        assert (again.returncode, again.stdout) == (0, f"{key}: already gone\n")
    assert [(row["status"], row["live"]) for row in rows(both(original, "rhl-ps", "--json"))] == [("stale", False)] * 2
    both(original, "rhl-logs", "demo-ours")  # the post-mortem window: the log is still there

    for tool, bin_dir in (("ours", OURS), ("theirs", original)):
        key = f"demo-{tool}"
        server = helper(bin_dir, "rhl-rm", "--server", key)
        assert server.stdout == f"removed {rhl_dir / 'server' / key}.json\n"
        client = helper(bin_dir, "rhl-rm", key)
        assert client.stdout == f"removed {rhl_dir / 'client' / key}.json\n"
        gone = helper(bin_dir, "rhl-rm", key, "--client", "--server")
        assert (gone.returncode, gone.stdout) == (0, f"{key}: not found\n")
        assert (rhl_dir / "server" / f"{key}.log").exists()  # logs stay
    for name, args in (("rhl-rm", []), ("rhl-rm", ["--force", "k"]), ("rhl-stop", []), ("rhl-stop", ["a/b"])):
        assert both(original, name, *args).returncode == 1


def test_stop_leaves_a_reused_pid_alone(rhl_dir: Path, demo_config: Factory, original: Path) -> None:
    """Where ours differs: a status file whose PID is now another program's (another start time): 0.4.5
    signals it; ours does not, says so as 0.4.5 says of a gone process, and marks the record stale."""
    launch(demo_config, "demo-reused")
    path = rhl_dir / "server" / "demo-reused.json"
    service = json.loads(path.read_text())["pid"]  # the record will not name it: ended here, not by rhl_dir
    other = subprocess.Popen(["sleep", "60"])
    try:
        path.write_text(json.dumps(dict(json.loads(path.read_text()), pid=other.pid)))
        done = helper(OURS, "rhl-stop", "demo-reused")
        assert (done.returncode, done.stdout) == (0, "demo-reused: already gone\n")
        assert other.poll() is None and json.loads(path.read_text())["status"] == "stale"
    finally:
        other.kill()
        other.wait()
        killpg(service, SIGKILL)


def persistent_tree(root: Path) -> None:
    """Seamless's persistent directories: buffer directories (a .HASHSERVER_PREFIX marker) and databases."""
    for project, content in (("full", ["ab12"]), ("empty", []), ("full/STAGE-x", ["cd34"])):
        (root / "buffers" / project).mkdir(parents=True)
        (root / "buffers" / project / ".HASHSERVER_PREFIX").write_text("")
        for name in content:
            (root / "buffers" / project / name).write_text("a buffer")
    (root / "buffers" / "unmarked").mkdir()
    (root / "db" / "proj").mkdir(parents=True)
    (root / "db" / "proj" / "seamless.db").write_bytes(b"x" * 100)
    (root / "db" / "none").mkdir()
    (root / "clear" / "sub" / ".keep").mkdir(parents=True)
    (root / "clear" / "sub" / "file").write_text("")
    (root / "clear" / ".hidden").mkdir()
    (root / "clear" / "top").write_text("")
    (root / "clear" / "gone").mkdir()
    os.symlink("/", root / "clear" / "link")


def test_ps_persistent_and_clear_do_what_the_originals_do(tmp_path: Path, original: Path) -> None:
    root = tmp_path / "persistent"
    persistent_tree(root)
    listed = rows(both(original, "rhl-ps-persistent", "--json", "--level", "2", "--marker", ".HASHSERVER_PREFIX",
                       root / "buffers"))
    assert [(Path(row["path"]).relative_to(root).as_posix(), row["state"]) for row in listed] == [
        ("buffers/empty", "empty"), ("buffers/full", "populated"), ("buffers/full/STAGE-x", "populated")]
    databases = rows(both(original, "rhl-ps-persistent", "--json", "--level", "1", "--file", "seamless.db",
                          "--marker", "seamless.db", root / "db"))
    assert [(row["path"], row["state"], row["size"]) for row in databases] == [(f"{root}/db/proj", "populated", 100)]
    for args in (["--level", "1", root / "buffers", root / "absent"], ["--json", root / "absent"],
                 ["--file", "a/b", root], ["relative"], ["/etc"], [], ["--level", "-1", root]):
        both(original, "rhl-ps-persistent", *args)

    copies = {tool: tmp_path / tool for tool in ("ours", "theirs")}
    for tool, bin_dir in (("ours", OURS), ("theirs", original)):
        shutil.copytree(root / "clear", copies[tool], symlinks=True)
        done = helper(bin_dir, "rhl-clear", copies[tool])
        assert (done.returncode, done.stdout) == (0, f"removed 3 item(s) from {copies[tool]}\n"), done.stderr
    trees = {tool: sorted(path.relative_to(copy).as_posix() for path in copy.rglob("*"))
             for tool, copy in copies.items()}
    assert trees["ours"] == trees["theirs"] == [".hidden", "sub", "sub/.keep"]
    refused: list[list[str | Path]] = [[], ["/"], ["/usr"], ["relative"], [root / "absent"],
                                       [root / "db" / "proj" / "seamless.db"]]
    for bad in refused:
        assert both(original, "rhl-clear", *bad).returncode == 1
