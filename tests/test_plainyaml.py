"""The PyYAML-free reader answers exactly as PyYAML's strict safe loader, or not at all.

Compared on the project's own configs (examples, the config corpora, the docs'
YAML blocks) and on generated documents built from the YAML 1.1 words and
layouts where a hand-made reader would go wrong (bools, octal, sexagesimal,
dates, comments, folding, chomping, indentation, tabs, odd line breaks).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_http_launcher import plainyaml
from remote_http_launcher.config import parse_yaml
from remote_http_launcher.errors import ConfigError
from tests.test_config import BAD, GOOD, config_text

ROOT = Path(__file__).resolve().parent.parent
GENERATED = 4000


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True == 1 and 1 == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def pyyaml(text: str) -> tuple[bool, Any]:
    """(True, document) as the launcher's PyYAML path reads it, or (False, None) where it refuses the text."""
    try:
        return True, yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return False, None


def assert_agrees(text: str) -> Any:
    fast = plainyaml.load(text)
    if fast is not None:
        ok, expected = pyyaml(text)
        assert ok, f"accepted what PyYAML refuses: {text!r}"
        assert same(fast, expected), f"{text!r}: {fast!r} != {expected!r}"
        assert not _duplicate_keys(text), text
    return fast


def _duplicate_keys(text: str) -> bool:
    try:
        parse_yaml(text)
    except ConfigError as exc:
        return "duplicate key" in str(exc)
    return False


def docs_yaml_blocks() -> list[str]:
    blocks = []
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        blocks += re.findall(r"```ya?ml\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return blocks


def test_the_examples_are_read_without_pyyaml_and_as_pyyaml_reads_them() -> None:
    declined = [path.name for path in sorted((ROOT / "examples").glob("*.yaml"))
                if assert_agrees(path.read_text(encoding="utf-8")) is None]
    assert declined == ["dask-ssh.yaml"]  # its `handshake: {path: ..., port_name: ...}` is a flow mapping


def test_the_corpora_and_the_docs_agree_with_pyyaml() -> None:
    texts = [config_text(entry) for entry in BAD + GOOD] + docs_yaml_blocks()
    read = [text for text in texts if assert_agrees(text) is not None]
    assert len(read) > len(texts) // 3, "the fast reader should read most configs people write"


KEYS = ["workdir", "key", "command", "port_start", "a-b", "x_1", "on", "yes", "null", "y", "1", "~", "a b",
        "'q'", "- k", "k ", "?k", "<<", "Key"]
COMMON = ["plain", "two words", "~/dir", "/abs/path", "8080", "0.5", "127.0.0.1", "yes", "off", "null",
          "http://x:1/y", "'it''s'", '"double"', "['a', 'b' ]", "{port}-x", "naïve 😀", "a #c"]
SCALARS = ["plain", "two words", "x  y", "~", "~/dir", "/abs/path", "$HOME/x", "(paren)", "null", "Null", "NULL",
           "true", "True", "TRUE", "tRue", "yes", "Yes", "no", "NO", "on", "Off", "y", "n", "0", "7", "8080",
           "007", "0o7", "0x1F", "0b101", "1_000", "1:30", "190:20:30", "1.5", "0.5", "1.", ".5", "1e3", "1.0e+3",
           "1.2.3", "127.0.0.1", "0.0.0.0", "1..2", "2001-12-14", "2002-12-14t21:59:43.10-05:00", "-1", "+1",
           ".inf", ".NaN", "=", "<<", "a: b", "a:b", "http://x:1/y", "a #c", "a#c", "end:", "'single'", "'it''s'",
           "'a' b", "'unterminated", '"double"', '"with \\"escape\\""', '"tab\\t"', '"a"#x', "'x' # c", '[]',
           '["a", "b"]', "['a', 'b' ]", '["a",]', '[a, b]', '["a" "b"]', "{a: 1}", "&anchor x", "*alias", "!tag x",
           "@x", "`x`", "%x", "|", "|-", ">", ">-", ">+", "|2", "> # c", "- item", "-x", "? x", "é", "naïve 😀",
           "{port}", "{x}-{y}", "a,b", "[x", "x]"]
CONTINUED = ["--flag {x}", "ok", "2", "{x}", "- d", "# c", "x: y", "x:", "'q'", '"q"', "a #b", "[x]", "&a",
             "~", "yes", "-x", "é"]
BLOCK_LINES = ["echo a", "--flag {x}", "# not a comment", "  more indented", "", "   ", "trailing ", "b: c", "- d"]
JUNK = ["\t", "\r", "\x85", "\u2028", "\ufeff", "\x01", " ", "#", ":", "  ", "---", "..."]


def generated(rng: random.Random) -> str:
    lines: list[str] = []
    values = COMMON if rng.random() < 0.6 else SCALARS
    for _ in range(rng.randint(1, 6)):
        key = rng.choice(KEYS[:5] * 4 + KEYS)
        kind = rng.random()
        if kind < 0.45:
            lines.append(f"{key}: {rng.choice(values)}" + rng.choice(["", "", "  # note", " #x", "  "]))
            while rng.random() < 0.2:  # a plain scalar going on below
                lines.append(rng.choice(["  ", " ", "    ", ""]) + rng.choice(CONTINUED) + rng.choice(["", " "]))
        elif kind < 0.6:
            lines.append(f"{key}:" + rng.choice(["", " # c"]))
            indent = rng.choice(["", "  ", "  ", "    "])
            for _ in range(rng.randint(1, 3)):
                lines.append(f"{indent}- {rng.choice(values)}")
        elif kind < 0.8:
            lines.append(f"{key}: {rng.choice(['|', '|-', '>', '>-', '>- # c', '|+', '>2'])}")
            indent = rng.choice([" ", "  ", "    "])
            for _ in range(rng.randint(1, 3)):
                lines.append(indent + rng.choice(BLOCK_LINES[:3] * 3 + BLOCK_LINES) if rng.random() < 0.9 else "")
        else:
            lines.append(f"{key}:")
            indent = rng.choice(["  ", "  ", "    ", " "])
            for _ in range(rng.randint(1, 3)):
                lines.append(f"{indent}{rng.choice(KEYS[:5])}: {rng.choice(values)}")
        if rng.random() < 0.15:
            lines.append(rng.choice(["", "# comment", "  # indented comment", "   "]))
    if rng.random() < 0.2:  # damage: a character or line YAML reads its own way
        at = rng.randrange(len(lines))
        line = lines[at]
        cut = rng.randint(0, len(line))
        lines[at] = line[:cut] + rng.choice(JUNK) + line[cut:]
    if rng.random() < 0.1:
        lines.insert(rng.randint(0, len(lines)), rng.choice(["  x: 1", "   y: 2", "- z"]))
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n", "\n  \n"])


def test_generated_documents_agree_with_pyyaml() -> None:
    rng = random.Random(20261207)
    texts = [generated(rng) for _ in range(GENERATED)]
    read = sum(assert_agrees(text) is not None for text in texts)
    assert GENERATED // 20 < read < GENERATED  # both paths taken, often


@pytest.mark.parametrize("text, expected", [
    ("command: >-\n  run a\n  --b\nkey: k\n", {"command": "run a --b", "key": "k"}),
    ("command: |\n  one\n  two\n\n", {"command": "one\ntwo\n"}),
    ("command: serve {x}\n  --port {port}\nkey: k\n", {"command": "serve {x} --port {port}", "key": "k"}),
    ("workdir: ~/w  # where\nport: 8080\nratio: 0.5\nhost: 10.0.0.1\non_: yes\n",
     {"workdir": "~/w", "port": 8080, "ratio": 0.5, "host": "10.0.0.1", "on_": True}),
    ("scheduler:\n  type: slurm\n  options: ['--time=1:00:00', \"-c 2\"]\nsetup:\n- module load x\n- 'a: b'\n",
     {"scheduler": {"type": "slurm", "options": ["--time=1:00:00", "-c 2"]}, "setup": ["module load x", "a: b"]}),
])
def test_what_configs_are_made_of_is_read_without_pyyaml(text: str, expected: dict[str, Any]) -> None:
    assert same(assert_agrees(text), expected)


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "a: 0755\n", "a: 1:30\n", "a: {b: 1}\n", "a: &x 1\n",
                                  "a: b # c\n  d\n", "a:\tb\n", "a: 2001-12-14\n", "- a\n", "", "# only\n"])
def test_what_it_is_not_sure_of_is_left_to_pyyaml(text: str) -> None:
    assert plainyaml.load(text) is None
