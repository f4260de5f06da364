"""`--version` and `completion SHELL`: the scripts shtab generates from the argparse parsers, run by the real
bash, zsh and fish (.ci/run installs them) on command lines a user types."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remote_http_launcher import __version__
from remote_http_launcher.cli import COMMANDS
from tests.conftest import ROOT
from tests.posix import python_path

PROG = "remote-http-launcher"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": python_path(ROOT)}
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def shell(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is needed (apt-get install {name}; .ci/run does)"
    return found


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory with config files and others, as a user's project has."""
    for name in ("service.yaml", "cluster.yml", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "configs").mkdir()
    return tmp_path


def script(shell_name: str, directory: Path) -> Path:
    result = cli("completion", shell_name)
    assert result.returncode == 0, result.stderr
    path = directory / f"completion.{shell_name}"
    path.write_text(result.stdout)
    return path


def test_version_prints_the_package_version() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{PROG} {__version__}\n", "")


def test_unknown_shell_is_a_usage_error() -> None:
    result = cli("completion", "csh")
    assert result.returncode == 2
    assert "invalid choice: 'csh'" in result.stderr


def bash_complete(completion: Path, words: list[str], cwd: Path) -> list[str]:
    """What bash's programmable completion offers for the last of `words`."""
    quoted = " ".join(f"'{word}'" for word in words)
    program = (f". {completion}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               f"COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n"
               "_shtab_remote_http_launcher\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run([shell("bash"), "-c", program], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(filter(None, result.stdout.splitlines()))


def test_bash_completes_subcommands_flags_and_config_files(files: Path) -> None:
    completion = script("bash", files)
    assert bash_complete(completion, [PROG, ""], files) == sorted(COMMANDS)
    assert bash_complete(completion, [PROG, "st"], files) == ["status", "stop"]
    assert {"--json", "--tail", "--follow"} <= set(bash_complete(completion, [PROG, "logs", "--"], files))
    assert "--host" in bash_complete(completion, [PROG, "list", "--"], files)
    assert {"service.yaml", "cluster.yml"} <= set(bash_complete(completion, [PROG, "status", ""], files))
    assert bash_complete(completion, [PROG, "completion", ""], files) == ["bash", "fish", "zsh"]


def fish_complete(completion: Path, line: str, cwd: Path) -> list[str]:
    """What fish offers for `line` (`complete -C`), without descriptions."""
    result = subprocess.run([shell("fish"), "--no-config", "-c", f"source {completion}; complete -C '{line}'"],
                            cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(entry.split("\t", 1)[0] for entry in result.stdout.splitlines())


def test_fish_completes_subcommands_flags_and_config_files(files: Path) -> None:
    completion = script("fish", files)
    assert fish_complete(completion, f"{PROG} ", files) == sorted(COMMANDS)
    assert {"--json", "--tail", "--follow"} <= set(fish_complete(completion, f"{PROG} logs --", files))
    offered = fish_complete(completion, f"{PROG} check ", files)
    assert {"service.yaml", "cluster.yml", "configs/"} <= set(offered)  # YAML first; fish sorts what it shows


def test_zsh_script_parses_and_registers_the_command(files: Path) -> None:
    completion = script("zsh", files)
    zsh = shell("zsh")
    assert subprocess.run([zsh, "-n", str(completion)], capture_output=True, text=True).returncode == 0
    program = (f"autoload -U compinit && compinit -u -D && eval \"$(<{completion})\" && print -r -- "
               f"${{_comps[{PROG}]}}")
    result = subprocess.run([zsh, "-f", "-c", program], cwd=files, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "HOME": str(files)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "_shtab_remote_http_launcher"
    text = completion.read_text()
    assert all(f"\n    {name}:'" in text for name in COMMANDS), "every subcommand is offered"
    assert "_files -g '*.(yaml|yml)'" in text
