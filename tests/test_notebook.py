"""Notebooks are first-class: run() and launch() in a real Jupyter kernel (ipykernel, driven with jupyter_client).

In a cell, progress is one display updated in place (display_data, then update_display_data with the
same display_id) that ends as the summary line; a login question is the cell's input box: an
input_request on the stdin channel, answered here through that channel; a kernel interrupt at the
question ends the cell and its tunnel keeper. A plain script shows nothing. examples/notebook.ipynb
runs under nbclient. Each kernel runs this checkout's package with HOME and the state directory of the
test (the SSH tests' HOME holds the ~/.ssh/config of the password-only test server).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from nbclient import NotebookClient

from remote_http_launcher.broker.registry import live_brokers
from remote_http_launcher.handle import ServiceHandle, launch
from remote_http_launcher.prompts import HOW_TO_ANSWER
from tests.conftest import kill_services
from tests.remote import keeper_processes

if TYPE_CHECKING:
    from tests.sshd import SSHServer

Factory = Callable[..., dict[str, Any]]
Message = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KERNEL_NAME = "rhl-test-python"
KERNEL_READY = 30.0
CELL_TIMEOUT = 60.0
SECONDS = r"\(\d+\.\d s\)"  # the live line's clock


class Cell(NamedTuple):
    """One executed cell: its execute_reply content, its IOPub messages and its stdin requests."""

    reply: Message
    outputs: list[Message]
    requests: list[Message]
    msg_id: str

    def of_type(self, *types: str) -> list[Message]:
        return [m for m in self.outputs if m["header"]["msg_type"] in types]

    def displays(self) -> list[tuple[str, str, str]]:
        """(message type, display_id, text) of every display and display update, in order."""
        return [(m["header"]["msg_type"], m["content"]["transient"]["display_id"], m["content"]["data"]["text/plain"])
                for m in self.of_type("display_data", "update_display_data")]

    def stream(self, name: str = "stdout") -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == name)

    def result(self) -> dict[str, str]:
        results = self.of_type("execute_result")
        assert len(results) == 1, self.outputs
        data: dict[str, str] = results[0]["content"]["data"]
        return data

    def ok(self) -> Cell:
        assert self.reply["status"] == "ok", self.reply.get("traceback") or self.reply
        return self


def write_kernel_spec(directory: Path) -> KernelSpecManager:
    """A kernel spec running this interpreter's ipykernel (never some other `python` on PATH)."""
    spec = directory / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "remote-http-launcher tests", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(directory)])


def kernel_env(scratch: Path) -> dict[str, str]:
    """This process's environment (HOME, REMOTE_HTTP_LAUNCHER_DIR as the fixtures set them) for a kernel that
    imports this checkout and keeps Jupyter's and IPython's own files in `scratch`."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "IPYTHONDIR": str(scratch / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), "JUPYTER_CONFIG_DIR": str(scratch / "config"),
            "JUPYTER_DATA_DIR": str(scratch / "data"), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


class Kernel:
    """A real ipykernel with a blocking client; `execute` runs a cell as a front end would."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.log = scratch / "kernel.log"
        self.km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=write_kernel_spec(scratch / "kernels"))
        with self.log.open("wb") as log:
            self.km.start_kernel(env=kernel_env(scratch), cwd=str(scratch), stdout=log, stderr=log)
        self.kc: BlockingKernelClient = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=KERNEL_READY)
        except BaseException:
            self.close()
            raise

    def execute(self, code: str, *, allow_stdin: bool = False, on_input: Callable[[Message], None] | None = None,
                timeout: float = CELL_TIMEOUT) -> Cell:
        outputs: list[Message] = []
        requests: list[Message] = []

        def stdin_hook(message: Message) -> None:
            requests.append(message)
            if on_input is None:
                raise AssertionError(f"unexpected input request: {message['content']}")
            on_input(message)

        reply = self.kc.execute_interactive(code, allow_stdin=allow_stdin, output_hook=outputs.append,
                                            stdin_hook=stdin_hook, timeout=timeout)
        return Cell(reply["content"], outputs, requests, reply["parent_header"]["msg_id"])

    def close(self) -> None:
        """Shut the kernel down (again: a no-op)."""
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernels(tmp_path: Path, rhl_dir: Path) -> Iterator[Callable[[], Kernel]]:
    """Start kernels inside the test (after its HOME is set); all are shut down afterwards."""
    started: list[Kernel] = []

    def start() -> Kernel:
        started.append(Kernel(tmp_path / f"kernel-{len(started)}"))
        return started[-1]

    yield start
    for kernel in started:
        kernel.close()


def calling(function: str, config: dict[str, Any], *, then: str = "") -> str:
    """A cell calling `function(config)` of the package, the config as JSON text (no quoting surprises)."""
    module = "remote_http_launcher.handle" if function == "launch" else "remote_http_launcher"
    return (f"import json\nfrom {module} import {function}\n"
            f"config = json.loads({json.dumps(config)!r})\nresult = {function}(config)\n{then}")



# ---------------------------------------------------------------- progress in a cell

def test_progress_in_a_cell_is_one_display_updated_in_place(kernels: Callable[[], Kernel], demo_config: Factory,
                                                            rhl_dir: Path) -> None:
    kernel = kernels()
    config = demo_config(args="--ready-delay 0.8")  # a wait long enough for the clock to tick
    cell = kernel.execute(calling("run", config, then="result['port']")).ok()
    port = int(cell.result()["text/plain"])
    shown = cell.displays()
    assert [kind for kind, _, _ in shown] == ["display_data"] + ["update_display_data"] * (len(shown) - 1)
    assert len({display_id for _, display_id, _ in shown}) == 1  # one line in the cell, updated in place
    texts = [text for _, _, text in shown]
    assert re.fullmatch(rf"checking connection file {SECONDS}", texts[0])
    assert re.fullmatch(rf"ready: http://localhost:{port}/ \(\d+\.\d\d s\)", texts[-1])
    assert all(re.fullmatch(rf".+ {SECONDS}", text) for text in texts[:-1])
    waiting = [text for text in texts if text.startswith("waiting for the service to report its port")]
    assert len(set(waiting)) >= 2, texts  # the polling loop's ticks moved the clock during the wait
    assert cell.stream("stdout") == cell.stream("stderr") == ""  # nothing else printed

    again = kernel.execute(calling("run", config)).ok()  # reconnecting: the same in one line
    assert [text for _, _, text in again.displays()][-1].startswith(f"reconnected: http://localhost:{port}/ (")
    assert len({display_id for _, display_id, _ in again.displays()}) == 1

    basic = kernel.execute(calling("run", {**config, "log_level": "basic"})).ok()  # asked for phase lines: lines
    assert basic.displays() == []
    assert re.search(rf"\d\d:\d\d:\d\d +\d+\.\d\ds reconnected: http://localhost:{port}/", basic.stream("stderr"))


def test_a_failed_call_leaves_no_stale_progress_line(kernels: Callable[[], Kernel], demo_config: Factory,
                                                     rhl_dir: Path) -> None:
    """The cell's display ends as `failed (N s)`, not as the phase the call was in when it failed."""
    kernel = kernels()
    cell = kernel.execute(calling("run", demo_config(command="sleep 0.6; echo boom; exit 3")))
    assert cell.reply["status"] == "error" and cell.reply["ename"] == "ServiceFailedError"
    texts = [text for _, _, text in cell.displays()]
    assert any(text.startswith("waiting for the service to report its port") for text in texts[:-1]), texts
    assert re.fullmatch(r"failed \(\d+\.\d\d s\)", texts[-1]), texts
    assert len({display_id for _, display_id, _ in cell.displays()}) == 1


def test_a_plain_script_shows_nothing(demo_config: Factory, rhl_dir: Path) -> None:
    """Not in a kernel (even with IPython and ipykernel imported): no output unless asked."""
    code = (f"import json, IPython, ipykernel\nfrom remote_http_launcher import run\n"
            f"run(json.loads({json.dumps(demo_config())!r}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# ---------------------------------------------------------------- login questions in a cell (real sshd)

@pytest.fixture
def server(password_server: SSHServer) -> SSHServer:
    """The test sshd, reachable with its password only: the client HOME's ~/.ssh/config names no key."""
    return password_server



@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_a_password_question_is_the_cells_input_box(kernels: Callable[[], Kernel], server: SSHServer,
                                                    password_config: Factory, rhl_dir: Path, tunnel: bool) -> None:
    kernel = kernels()

    def answer(request: Message) -> None:
        kernel.kc.input(server.password)

    get = "import urllib.request\n" \
          "urllib.request.urlopen(f\"http://{result['hostname']}:{result['port']}/healthcheck\", timeout=10).read()"
    cell = kernel.execute(calling("run", password_config(tunnel=tunnel), then=get), allow_stdin=True,
                          on_input=answer).ok()
    assert [r["content"] for r in cell.requests] == [
        {"prompt": f"{server.user}@{server.host}'s password: ", "password": True}]
    assert cell.requests[0]["parent_header"]["msg_id"] == cell.msg_id  # addressed to this cell's input box
    assert cell.result()["text/plain"] == "b'ok\\n'"  # logged in with the answer; the service answers
    texts = [text for _, _, text in cell.displays()]
    assert texts[-1].startswith("ready: http://")
    assert server.password not in json.dumps(cell.outputs, default=str)
    if tunnel:
        assert "opening the tunnel" in " ".join(texts)  # the run's phases, shown as it goes
        key = password_config(tunnel=True)["key"]
        payload = json.loads((rhl_dir / "client" / f"{key}.json").read_text())
        kernel.close()  # the tunnel outlives the kernel on purpose: other processes share the client file
        brokers = [owner.pid for _files, owner in live_brokers(rhl_dir / "brokers")]
        assert brokers == [payload["keeper_pid"]]  # the host's connection broker keeps it


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_an_interrupt_at_the_question_ends_the_cell_and_leaves_nothing(kernels: Callable[[], Kernel],
                                                                       password_config: Factory, rhl_dir: Path,
                                                                       tunnel: bool) -> None:
    kernel = kernels()
    config = password_config(tunnel=tunnel)
    threads = "import threading\nsorted(thread.name for thread in threading.enumerate())"
    before = kernel.execute(threads).ok().result()["text/plain"]
    started = time.monotonic()
    cell = kernel.execute(calling("run", config), allow_stdin=True,
                          on_input=lambda request: kernel.km.interrupt_kernel())
    assert len(cell.requests) == 1 and cell.requests[0]["content"]["password"] is True
    assert (cell.reply["status"], cell.reply["ename"]) == ("error", "KeyboardInterrupt")
    assert time.monotonic() - started < 15
    assert keeper_processes(config["key"]) == []
    client = rhl_dir / "client"
    assert not (client / f"{config['key']}.json").exists()
    assert not (client / f"{config['key']}.keeper.lock").exists()
    assert [p.name for p in client.glob("*keeper-config*")] == []  # the keeper's config file is gone too
    deadline = time.monotonic() + 5
    while kernel.execute(threads).ok().result()["text/plain"] != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kernel.execute(threads).ok().result()["text/plain"] == before  # no login thread left in the kernel

    # A front end that allows no input: nothing is asked, and the error says how to answer.
    refused = kernel.execute(calling("run", config), allow_stdin=False)
    assert refused.requests == []
    assert refused.reply["ename"] == "AuthenticationError"
    assert "password skipped: no way to ask" in refused.reply["evalue"]
    assert HOW_TO_ANSWER in refused.reply["evalue"]
    assert keeper_processes(config["key"]) == []


INPUT_BOX_PROBES = """
import threading
from remote_http_launcher.prompts import jupyter_kernel
seen = {"cell": jupyter_kernel() is not None}
thread = threading.Thread(target=lambda: seen.update(thread=jupyter_kernel() is not None))
thread.start()
thread.join()
get_ipython().kernel.comm_manager.register_target(
    "rhl-probe", lambda comm, message: seen.update(comm=jupyter_kernel() is not None))
"""


def test_the_input_box_is_used_only_for_a_cell_that_allows_input(kernels: Callable[[], Kernel]) -> None:
    """ipykernel keeps a cell's allow_stdin after it ends: a widget callback (a comm message), another thread
    or a cell run without input must not send an input request nobody will answer."""
    kernel = kernels()
    kernel.execute(INPUT_BOX_PROBES, allow_stdin=True).ok()
    opening = kernel.kc.session.msg("comm_open", {"comm_id": "rhl-probe-1", "target_name": "rhl-probe", "data": {}})
    kernel.kc.shell_channel.send(opening)  # as a widget's front end would, after that cell allowed input
    kernel.execute("import time\ntime.sleep(0.2)").ok()  # the comm message is handled before this cell
    assert kernel.execute("seen", allow_stdin=True).ok().result()["text/plain"] == \
        "{'cell': True, 'thread': False, 'comm': False}"
    no_input = kernel.execute("from remote_http_launcher.prompts import jupyter_kernel\njupyter_kernel() is None")
    assert no_input.ok().result()["text/plain"] == "True"


# ---------------------------------------------------------------- launch(): a handle for notebook code

def test_launch_in_a_cell_gives_a_handle(kernels: Callable[[], Kernel], demo_config: Factory, rhl_dir: Path) -> None:
    kernel = kernels()
    config = demo_config()
    shown = kernel.execute(calling("launch", config, then="svc = result\nsvc")).ok()
    port = json.loads((rhl_dir / "client" / "demo-localhost.json").read_text())["port"]
    url = f"http://localhost:{port}/"
    assert shown.displays()[-1][2].startswith(f"ready: {url} (")
    assert shown.result()["text/plain"] == f"<service demo-localhost running at {url}>"
    table = shown.result()["text/html"]
    assert table.startswith("<table") and f'<a href="{url}" target="_blank">{url}</a>' in table
    used = kernel.execute("import urllib.request\n"
                          "print(urllib.request.urlopen(svc.url + 'healthcheck', timeout=10).read().decode(), end='')\n"
                          "print(svc.key, svc.payload['port'], svc.status()['status'])\n"
                          "print(svc.logs(tail=2), end='')").ok()
    assert used.stream().splitlines() == [
        "ok", f"demo-localhost {port} running", '127.0.0.1 "GET /healthcheck HTTP/1.1" 200 -',
        '127.0.0.1 "GET /healthcheck HTTP/1.1" 200 -']
    stopped = kernel.execute("outcome = svc.stop()\nprint(outcome['message'])\nsvc").ok()
    assert stopped.stream().startswith("stopped demo-localhost on localhost (pid ")
    assert stopped.result()["text/plain"] == f"<service demo-localhost stopped (was at {url})>"
    assert not (rhl_dir / "server" / "demo-localhost.json").exists()


def test_a_handle_keeps_the_config_it_was_launched_with(demo_config: Factory, rhl_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = demo_config()
    svc = launch(config)
    config["key"] = "another-{network_interface}"  # the caller's dict changes; the handle's copy does not
    assert svc.status()["status"] == "running" and svc.status()["key"] == "demo-localhost"
    assert svc.stop()["stopped"] is True
    assert svc.state == "stopped" and svc.status()["status"] == "absent" and svc.state == "absent"

    (tmp_path / "svc.json").write_text(json.dumps(demo_config(key="from-file")))  # YAML is a superset of JSON
    monkeypatch.chdir(tmp_path)
    from_file = launch("svc.json", prompt=lambda text, secret: "")
    monkeypatch.chdir("/")  # a relative path was made absolute at launch
    assert from_file.config == str(tmp_path / "svc.json") and from_file.key == "from-file"
    assert from_file.prompt is not None and from_file.connection_dir is None
    assert from_file.status()["status"] == "running"
    assert from_file.stop()["stopped"] is True


def test_a_handle_in_a_with_block_stops_the_service_at_its_end(demo_config: Factory, rhl_dir: Path) -> None:
    """Opt-in: the `with` block stops the service when it ends, also when it raises; a handle used without
    one leaves the service running (the test above)."""
    with launch(demo_config()) as svc:
        pid = svc.status()["pid"]
        assert svc.status()["status"] == "running"
    assert svc.state == "stopped" and svc.status()["status"] == "absent"
    assert not (rhl_dir / "server" / "demo-localhost.json").exists()
    with pytest.raises(ZeroDivisionError), launch(demo_config()) as again:
        assert again.status()["pid"] != pid
        raise ZeroDivisionError
    assert again.status()["status"] == "absent"


def test_handle_repr_and_html_escape_every_value() -> None:
    tunnel = ServiceHandle({}, {"hostname": "localhost", "port": 5000, "keeper_pid": 42, "dashboard_port": 5001,
                                "tunneled-dashboard_port": 8787}, key="svc", host="gpu-box", tunnel=True)
    assert repr(tunnel) == "<service svc running at http://localhost:5000/ (tunnel via gpu-box)>"
    direct = ServiceHandle({}, {"hostname": "10.0.0.2", "port": 80}, key="svc", host="gpu", tunnel=False)
    assert repr(direct) == "<service svc running at http://10.0.0.2:80/ (direct, ssh gpu)>"
    assert "tunnel keeper" in tunnel._repr_html_() and "dashboard_port" in tunnel._repr_html_()
    assert "tunneled-" not in tunnel._repr_html_()

    hostile = ServiceHandle({}, {"hostname": '"><script>x</script>', "port": "<b>1</b>", "evil_port": "<i>&"},
                            key="k<&>", host="h'\"<>", tunnel=True)
    table = hostile._repr_html_()
    assert "<script>" not in table and "<b>" not in table and "<i>" not in table
    for raw in ('"><script>x</script>', "<b>1</b>", "<i>&", "k<&>"):
        assert html.escape(raw) in table
    assert html.escape("tunnel via h'\"<>") in table


# ---------------------------------------------------------------- the example notebook, under nbclient

def test_the_example_notebook_runs(tmp_path: Path, rhl_dir: Path) -> None:
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=write_kernel_spec(tmp_path / "kernels"))
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, startup_timeout=KERNEL_READY,
                            resources={"metadata": {"path": str(EXAMPLES)}})
    try:
        client.execute(env={**kernel_env(tmp_path), "HOME": str(home), "TMPDIR": str(scratch)})
    finally:
        for state in scratch.glob("rhl-notebook-*/state"):  # whatever a failing run left
            kill_services(state)

    def outputs(text: str) -> list[Any]:
        """The outputs of the one code cell whose source has `text`."""
        found: list[list[Any]] = [cell.outputs for cell in notebook.cells
                                  if cell.cell_type == "code" and text in cell.source]
        assert len(found) == 1, text
        return found[0]

    launched, stopped = outputs("svc = launch(config)"), outputs("svc.stop()")
    ready = re.fullmatch(r"ready: (http://localhost:\d+/) \(\d+\.\d\d s\)", launched[0]["data"]["text/plain"])
    assert ready is not None, launched  # the progress display, left as the summary line
    url = ready.group(1)
    assert launched[1]["data"]["text/plain"] == f"<service demo-notebook running at {url}>"
    assert launched[1]["data"]["text/html"].startswith("<table")
    assert "'service': 'demo'" in outputs("urlopen(svc.url")[0]["text"]
    assert "'status': 'running'" in outputs("svc.status()")[0]["data"]["text/plain"]
    assert '"GET / HTTP/1.1" 200' in outputs("svc.logs(tail=5)")[0]["text"]
    assert stopped[0]["text"].startswith("stopped demo-notebook on localhost (pid ")
    assert stopped[1]["data"]["text/plain"] == f"<service demo-notebook stopped (was at {url})>"
    assert list(scratch.iterdir()) == [] and list(home.iterdir()) == []  # it removed what it wrote, and no ~/.rhl
    assert not rhl_dir.exists()
