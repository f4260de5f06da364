"""Stock servers, locally: a command reading `{port}` (`python -m http.server {port}`) gets a port chosen on
its host, the launcher writes its `running` record, `url_pattern` finds its URL in its log. Real processes,
real HTTP; the `rhl_dir` fixture stops what the status files record."""

from __future__ import annotations

import json
import socket
import stat
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import ConfigError, run
from remote_http_launcher.config import load_config

from .conftest import cli

KEY = "web"


def web_config(tmp_path: Path, command: str = "", **fields: Any) -> dict[str, Any]:
    """`python -m http.server {port}` on loopback, its first line (the URL) unbuffered."""
    return {"workdir": str(tmp_path / "site"), "key": KEY,
            "command": command or f"{sys.executable} -u -m http.server {{port}} --bind 127.0.0.1", **fields}


def free_range(size: int) -> int:
    """The first of `size` consecutive ports nothing listens on now (a guess; the kernel picks the base)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = int(probe.getsockname()[1]) % 20000 + 20000
    return base


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def record(rhl_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((rhl_dir / "server" / f"{KEY}.json").read_text())
    return data


def test_port_is_chosen_on_the_host_and_the_launcher_writes_running(rhl_dir: Path, tmp_path: Path) -> None:
    base = free_range(2)
    with socket.socket() as taken:  # the first port of the range is in use: the launch takes the other one
        taken.bind(("127.0.0.1", base))
        taken.listen()
        payload = run(web_config(tmp_path, port_start=base, port_end=base + 1,
                                 url_pattern=r"http://[0-9.]+:[0-9]+/"))
    assert payload["port"] == base + 1
    assert payload["url"] == f"http://localhost:{base + 1}/"
    assert get(payload["url"]) == 200
    server = record(rhl_dir)
    assert (server["status"], server["port"], server["stock_ports"]) == ("running", base + 1, {"port": base + 1})
    assert server["url"] == f"http://127.0.0.1:{base + 1}/"  # as the log printed it
    assert str(base + 1) in server["command"] and "rhlport" not in server["command"]
    client = rhl_dir / "client" / f"{KEY}.json"
    assert json.loads(client.read_text())["url"] == payload["url"]
    assert stat.S_IMODE(client.stat().st_mode) == 0o600
    assert run(web_config(tmp_path))["port"] == base + 1  # reused, not launched again


def test_placeholder_is_replaced_inside_any_quoting_and_extra_ports_get_their_own(rhl_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """`{port}` in single quotes still becomes the port (a shell variable would not expand there); another
    `{NAME_port}` the config does not set gets a free port too, reported like a status file's extra ports."""
    python = sys.executable
    command = (f"{python} -m http.server '{{port}}' --bind 127.0.0.1 & "
               f"exec {python} -m http.server \"{{side_port}}\" --bind 127.0.0.1")
    payload = run(web_config(tmp_path, command))
    assert payload["side_port"] != payload["port"]
    assert get(f"http://127.0.0.1:{payload['port']}/") == 200
    assert get(f"http://127.0.0.1:{payload['side_port']}/") == 200
    assert payload["url"] == f"http://localhost:{payload['port']}/"
    assert record(rhl_dir)["side_port"] == payload["side_port"]


def test_a_service_that_exits_at_once_is_relaunched_once_on_another_port(rhl_dir: Path, tmp_path: Path) -> None:
    flag = tmp_path / "first-try"
    command = (f"if [ -e {flag} ]; then exec {sys.executable} -m http.server {{port}} --bind 127.0.0.1; fi; "
               f"echo {{port}} > {flag}; exit 1")
    payload = run(web_config(tmp_path, command))
    assert get(f"http://127.0.0.1:{payload['port']}/") == 200
    assert flag.read_text().strip().isdigit()  # the first launch had a port of its own


def test_a_service_that_never_listens_fails_after_two_launches(rhl_dir: Path, tmp_path: Path) -> None:
    from remote_http_launcher import LauncherError

    with pytest.raises(LauncherError, match="exited before reporting its port"):
        run(web_config(tmp_path, "echo {port}; exit 3"))


def test_no_url_pattern_match_still_runs_with_the_plain_url(rhl_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from remote_http_launcher import stock

    monkeypatch.setattr(stock, "URL_WAIT", 0.5)
    payload = run(web_config(tmp_path, url_pattern="token=[0-9a-f]+"))
    assert payload["url"] == f"http://localhost:{payload['port']}/"
    assert record(rhl_dir)["url_pattern_unmatched"] is True


def test_dry_run_shows_the_port_fields(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(json.dumps(web_config(tmp_path)))
    done = cli("up", path, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "http.server <port> --bind" in done.stdout


@pytest.mark.parametrize(("fields", "field"), [
    ({"url_pattern": "http://(unclosed"}, "url_pattern"),
    ({"port_start": 30000, "port_end": 29000}, "port_end"),
    ({"command": "serve --port {port} --status-file {status_file}"}, "command"),
    ({"local_port": 8888}, "local_port"),
])
def test_config_errors_name_the_field(tmp_path: Path, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        load_config(web_config(tmp_path, **fields))
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(web_config(tmp_path, **fields)))
    done = cli("up", path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {field}: ") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "site").exists()  # nothing launched


def test_a_config_that_sets_port_is_a_template_variable_as_before(tmp_path: Path) -> None:
    config = load_config(web_config(tmp_path, port=8000))
    assert config.stock_ports == ()


def fake_browser(tmp_path: Path) -> tuple[str, Path]:
    """A $BROWSER command that writes the URL it is given to a file."""
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    script.chmod(0o755)
    return str(script), opened


def test_open_hands_the_url_to_the_browser(rhl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    browser, opened = fake_browser(tmp_path)
    monkeypatch.setenv("BROWSER", browser)
    path = tmp_path / "web.yaml"
    path.write_text(json.dumps(web_config(tmp_path, url_pattern=r"http://[0-9.]+:[0-9]+/")))
    done = cli("up", path, "--open", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert opened.read_text().splitlines() == [payload["url"]]
    assert f"ready: {payload['url']}" in done.stderr  # the final progress line shows the same URL


def test_open_browser_and_handle_open(rhl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    from remote_http_launcher import launch

    browser, opened = fake_browser(tmp_path)
    monkeypatch.setenv("BROWSER", browser)
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # read $BROWSER again
    handle = launch(web_config(tmp_path), open_browser=True)
    assert handle.url == f"http://localhost:{handle.payload['port']}/"
    assert handle.open() is True
    assert opened.read_text().splitlines() == [handle.url, handle.url]


def test_status_and_list_show_the_url(rhl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from remote_http_launcher import stock

    monkeypatch.setattr(stock, "URL_WAIT", 0.5)
    path = tmp_path / "web.yaml"
    path.write_text(json.dumps(web_config(tmp_path, url_pattern=r"http://[0-9.]+:[0-9]+/")))
    payload = run(path)
    status = json.loads(cli("status", path, "--json").stdout)
    assert (status["client"]["url"], status["url"], status["url_pattern_matched"]) == (
        payload["url"], f"http://127.0.0.1:{payload['port']}/", True)
    assert f"url           {payload['url']}" in cli("status", path).stdout
    [listed] = json.loads(cli("list", "--json").stdout)["services"]
    assert listed["url"] == f"http://127.0.0.1:{payload['port']}/"
    cli("stop", path)
    path.write_text(json.dumps(web_config(tmp_path, url_pattern="token=[0-9a-f]+")))
    run(path)
    assert "(url_pattern did not match the log: the plain URL)" in cli("status", path).stdout


def test_a_status_file_service_gets_its_url_from_its_log_too(rhl_dir: Path, tmp_path: Path,
                                                             demo_config: Any) -> None:
    """The demo service reports its own port; `url_pattern` still finds a path in its log (searched once, when
    it reports running: here the status file's path, which the demo prints), put on the way in, and the status
    file stays the service's own."""
    payload = run(demo_config(url_pattern="(?<=status file )/\\S+"))
    assert payload["url"] == f"http://localhost:{payload['port']}{rhl_dir / 'server' / 'demo-localhost.json'}"
    assert "url" not in json.loads((rhl_dir / "server" / "demo-localhost.json").read_text())


def test_url_rewrite_keeps_path_and_query_and_maps_extra_ports() -> None:
    from remote_http_launcher.statefiles import ServerState
    from remote_http_launcher.stock import client_url

    state = ServerState("running", 10, 20001, None, None, {"port": 20001, "dashboard_port": 20002})
    tunnel = {"hostname": "localhost", "port": 41000, "tunneled-port": 20001, "dashboard_port": 41001}
    assert client_url(tunnel, state, "http://node3:20001/lab?token=ab12#x") == "http://127.0.0.1:41000/lab?token=ab12#x"
    assert client_url(tunnel, state, "http://10.0.0.5:20002/status") == "http://127.0.0.1:41001/status"
    assert client_url({"hostname": "::1", "port": 5}, state, None) == "http://[::1]:5/"
    assert client_url({"hostname": "h", "port": 5}, state, "node:20001") == "http://h:5/"
