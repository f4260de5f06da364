"""Tests for the f-string template sandbox: real evaluation, no mocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher.errors import TemplateError
from remote_http_launcher.templates import render

ESCAPES_FILE = Path(__file__).parent / "data" / "template_escapes.txt"


def _namespace() -> dict[str, Any]:
    return {
        "workdir": "/srv/apps/demo/",
        "port_start": 8000,
        "port_end": 8010,
        "status_file": "/tmp/demo/status.json",
        "timeout": 30,
        "config": {"network_interface": "127.0.0.1", "a": {"b": 1}},
        "flag": False,
        "x": "yes",
        "y": "no",
        "name": "demo",
        "items": ["first", "second"],
        "a": 3,
        "b": 3,
        "verbose": True,
        "value": "v",
        "width": 4,
    }


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('myservice-{workdir.strip("/").replace("/", "--")}', "myservice-srv--apps--demo"),
        (
            "myservice --port-range {port_start} {port_end} --status-file {status_file}"
            " --host {config['network_interface']} --timeout {timeout} {workdir}",
            "myservice --port-range 8000 8010 --status-file /tmp/demo/status.json"
            " --host 127.0.0.1 --timeout 30 /srv/apps/demo/",
        ),
        ("{port_start + 1}", "8001"),
        ("{x if flag else y}", "no"),
        ("{timeout:05d}", "00030"),
        ("{name!r}", "'demo'"),
        ("{items[0]}", "first"),
        ("{a == b}", "True"),
        ('{"-v" if verbose else ""}', "-v"),
        ("[{value:{width}}]", "[v   ]"),
        ("{{literal}} {{{name}}}", "{literal} {demo}"),
        ("plain text", "plain text"),
        ("", ""),
        ("{items[::-1]} {items[-1][:3]}", "['second', 'first'] sec"),
        ('{" ".join(items)} {",".join(config.keys())}', "first second network_interface,a"),
        ("{config.get('missing', 'dflt')} {config['a']['b']}", "dflt 1"),
        ("{1 < a <= b < 4} {a < 2 < b} {'demo' in name}", "True False True"),
        ("{flag or x} {verbose and y} {not flag}", "yes no True"),
        ("{port_end - port_start} {timeout / 4} {timeout // 4} {timeout % 7} {-a}", "10 7.5 7 2 -3"),
        ("{name.upper()!r:>8} {name!a} {timeout!s:>4}", "  'DEMO' 'demo'   30"),
        ("{workdir.split('/', maxsplit=2)}", "['', 'srv', 'apps/demo/']"),
        ("{f'{name}-{port_start}'}", "demo-8000"),
        ("{'-' * 3}{(1, 'a')}{[a, b]}", "---(1, 'a')[3, 3]"),
        ("it's \"{name}\"", "it's \"demo\""),
        ("C:\\dir\\{name}\\", "C:\\dir\\demo\\"),
        ("line one\n{name}", "line one\ndemo"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, _namespace(), field="command") == expected


def _escape_lines() -> list[str]:
    lines = ESCAPES_FILE.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _escape_cases() -> list[Any]:
    cases = [pytest.param(line, id=line) for line in _escape_lines()]
    generated = {
        "20000-char expression": "{" + "+".join(["1"] * 10_000) + "}",
        "2500-term expression": "{" + "+".join(["1"] * 2_500) + "}",
        "parens nested 1000 deep": "{" + "(" * 1000 + "1" + ")" * 1000 + "}",
        "lists nested 1000 deep": "{" + "[" * 1000 + "]" * 1000 + "}",
        "list of 600 items": "{[" + "1," * 600 + "]}",
        "lists nested 100 deep": "{" + "[" * 100 + "]" * 100 + "}",
        "unary minus 4000 deep": "{" + "-" * 4000 + "1}",
        "not 100 deep": "{" + "not " * 100 + "flag}",
        "attribute chain 300 long": "{workdir" + ".strip()" * 300 + "}",
    }
    return cases + [pytest.param(template, id=name) for name, template in generated.items()]


@pytest.mark.parametrize("template", _escape_cases())
def test_escape_is_refused(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    namespace = _namespace()
    with pytest.raises(TemplateError) as info:
        render(template.replace("MARKER", str(marker)), namespace, field="key")
    message = str(info.value)
    assert message.startswith("key: ")
    assert len(message.splitlines()) == 1
    assert not marker.exists()
    assert namespace == _namespace()  # nothing was mutated either


def test_escape_corpus_is_large() -> None:
    assert len(_escape_lines()) >= 40


@pytest.mark.parametrize(
    "template",
    [
        "''' + __import__('os').system('touch MARKER') + '''",
        '""" + open("MARKER", "w").write("x") + """',
        "'}{__import__('os').system('touch MARKER')}{'",
    ],
)
def test_quote_breakouts_stay_literal_or_are_refused(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    template = template.replace("MARKER", str(marker))
    try:
        assert render(template, _namespace(), field="command") == template
    except TemplateError:
        pass
    assert not marker.exists()


def test_unknown_name_lists_it_and_known_names() -> None:
    with pytest.raises(TemplateError) as info:
        render("svc --port {port_strat}", {"port_start": 1, "workdir": "/w", "_hidden": 0}, field="command")
    assert str(info.value) == "command: unknown name 'port_strat' in template (known: port_start, workdir)"


def test_unknown_name_in_branch_not_taken_is_still_refused() -> None:
    with pytest.raises(TemplateError, match="unknown name 'typo'"):
        render("{x if True else typo}", {"x": 1}, field="command")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "{config.__class__}",
            "key: attribute '__class__' is not allowed in templates (names starting with '_' are private)",
        ),
        ("{(lambda: 1)}", "key: lambda is not allowed in templates"),
        (
            "{open('x')}",
            "key: calling open() is not allowed in templates (only methods such as .strip() can be called)",
        ),
        ("{workdir.format()}", "key: method .format() is not allowed in templates"),
        ("{port_start.bit_length()}", "key: method .bit_length() is not allowed in templates"),
        ("{config['nope']}", "key: cannot evaluate {config['nope']}: KeyError: 'nope'"),
        ("{1 + 'a'}", "key: cannot evaluate {1 + 'a'}: TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
        ("{timeout / 0}", "key: cannot evaluate {timeout / 0}: ZeroDivisionError: division by zero"),
        (
            "{items.count()}",
            "key: cannot evaluate {items.count()}: TypeError: list.count() takes exactly one argument (0 given)",
        ),
        ("{timeout.strip()}", "key: method .strip() is not allowed on int values in {timeout.strip()}"),
        ("{name", "key: invalid template syntax: f-string: expecting '}'"),
        ("name}", "key: invalid template syntax: f-string: single '}' is not allowed"),
        ("x" * 10_001, "key: template is too long (10001 > 10000 characters)"),
    ],
)
def test_error_messages(template: str, expected: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, _namespace(), field="key")
    assert str(info.value) == expected


def test_message_is_one_line_even_when_names_contain_newlines() -> None:
    with pytest.raises(TemplateError) as info:
        render("{nope}", {"bad\nkey": 1}, field="command")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("command: unknown name 'nope'")


def test_template_must_be_a_string() -> None:
    with pytest.raises(TemplateError, match=r"^key: template must be a string, not int$"):
        render(42, {}, field="key")  # type: ignore[arg-type]
