"""Login questions reach the user where the call was made: a `prompt=` function here, over a real sshd.

The tunnel keeper never reads a terminal: its questions travel to the calling process, which asks
them and sends the answers back. One question per answer, asked on the calling thread (a Jupyter
kernel's input box works only there), and the secret ends up in no log, state file or command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, run
from tests.remote import keeper_processes
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

Factory = Callable[..., dict[str, Any]]


@pytest.fixture
def server(password_server: SSHServer) -> SSHServer:
    """The test sshd, reachable with its password only (no key in the client's ~/.ssh/config)."""
    return password_server



class Asker:
    """A prompt function that answers from a list and records every question and its thread."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, bool]] = []
        self.threads: set[str] = set()

    def __call__(self, text: str, secret: bool) -> str:
        self.asked.append((text, secret))
        self.threads.add(threading.current_thread().name)
        if not self.answers:
            raise EOFError("no more answers")
        return self.answers.pop(0)



def files_under(*roots: Path) -> list[Path]:
    return [path for root in roots if root.exists() for path in root.rglob("*") if path.is_file()]


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_one_question_per_login_asked_on_the_calling_thread(server: SSHServer, password_config: Factory,
                                                            rhl_dir: Path, tunnel: bool) -> None:
    ask = Asker(server.password)
    config = password_config(tunnel=tunnel)
    payload = run(config, prompt=ask)
    assert ask.asked == [(f"{server.user}@{server.host}'s password: ", True)]
    assert ask.threads == {threading.main_thread().name}
    assert run(config, prompt=ask) == payload and len(ask.asked) == 1  # reconnecting asks nothing
    if tunnel:  # the keeper logged in with the relayed answer, which it never got on its command line
        keeper = payload["keeper_pid"]
        assert server.password.encode() not in Path(f"/proc/{keeper}/cmdline").read_bytes()
        assert server.password.encode() not in Path(f"/proc/{keeper}/environ").read_bytes()
    for path in files_under(rhl_dir):  # client files, keeper log and lock, cached config
        assert server.password.encode() not in path.read_bytes(), path


def test_a_wrong_answer_then_the_right_one_through_the_keeper(server: SSHServer, password_config: Factory) -> None:
    ask = Asker("wrong password", server.password)
    run(password_config(tunnel=True), prompt=ask)
    question = f"{server.user}@{server.host}'s password: "
    assert ask.asked == [(question, True), (f"Permission denied, please try again.\n{question}", True)]


def test_no_answer_fails_cleanly_through_the_keeper(server: SSHServer, password_config: Factory, rhl_dir: Path) -> None:
    ask = Asker()  # every question raises EOFError
    config = password_config(tunnel=True)
    with pytest.raises(AuthenticationError) as caught:
        run(config, prompt=ask)
    assert caught.value.step == "auth" and caught.value.host == ALIAS
    assert len(ask.asked) >= 1
    assert keeper_processes(config["key"]) == []
    assert not (rhl_dir / "client" / f"{config['key']}.json").exists()
    assert not (rhl_dir / "client" / f"{config['key']}.keeper.lock").exists()


def test_ctrl_c_at_a_question_ends_the_run_and_its_keeper(server: SSHServer, password_config: Factory,
                                                          rhl_dir: Path) -> None:
    def interrupt(text: str, secret: bool) -> str:
        raise KeyboardInterrupt

    config = password_config(tunnel=True)
    with pytest.raises(KeyboardInterrupt):
        run(config, prompt=interrupt)
    assert keeper_processes(config["key"]) == []
    assert not (rhl_dir / "client" / f"{config['key']}.keeper.lock").exists()


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_nowhere_to_ask_is_a_clear_one_line_error(server: SSHServer, password_config: Factory, tmp_path: Path,
                                                  tunnel: bool) -> None:
    """A script (stdin not a terminal, no prompt=): the error says which step needed input and how to give it."""
    import json

    path = tmp_path / "config.yaml"
    config = password_config(tunnel=tunnel)
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: ssh {ALIAS} ({server.host}:{server.port}): auth: authentication failed as "
        f"{server.user}@{server.host} (tried: agent (0 keys), "
        "keyboard-interactive skipped: no way to ask, password skipped: no way to ask); to answer password or "
        "code prompts, run it on a terminal, or pass prompt= to run() (a function (text, secret) -> answer)")
    assert keeper_processes(config["key"]) == []
