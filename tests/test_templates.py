"""Tests for the f-string template sandbox: real evaluation, no mocks."""

from __future__ import annotations

import os
import random
import subprocess
import sys
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
        # str.format() and str.format_map(), interpreted field by field
        ("{'--port-range {} {}'.format(port_start, port_end)}", "--port-range 8000 8010"),
        (
            "hashserver {'--port-range {} {}'.format(port_start, port_end)} --status-file {status_file}",
            "hashserver --port-range 8000 8010 --status-file /tmp/demo/status.json",
        ),
        ("{'{0}-{1}-{0}'.format(name, port_start)}", "demo-8000-demo"),
        ("{'{name}:{port}'.format(name=name, port=port_start)}", "demo:8000"),
        ("{'{0}/{sub}'.format(workdir.rstrip('/'), sub='logs')}", "/srv/apps/demo/logs"),
        ("{'{network_interface}'.format_map(config)}", "127.0.0.1"),
        ("{'{b}'.format_map(config['a'])}", "1"),
        ("{'{!r} {!s} {!a}'.format(name, port_start, 'é')}", "'demo' 8000 '\\xe9'"),
        (
            "{'[{:>6}] [{:<6}] [{:^6}] [{:05d}]'.format(name, name, name, timeout)}",
            "[  demo] [demo  ] [ demo ] [00030]",
        ),
        ("{'{0!r:>8}|{1:.2f}|{2:x}|{3:,}'.format(name, timeout / 4, 255, 1234567)}", "  'demo'|7.50|ff|1,234,567"),
        ("{'{{}} {{{}}} {{0}}'.format(name)}", "{} {demo} {0}"),
        ("{'no fields'.format()} {''.format(name)}", "no fields "),
        ("{'{}'.format(items)} {'{}'.format(config['a'])}", "['first', 'second'] {'b': 1}"),
        ("{f'{{}}-{name}'.format(port_start)}", "8000-demo"),
        ("{('{' + '}').format(timeout)}", "30"),
        ("{'{}'.format('{0.__class__}')}", "{0.__class__}"),  # a field's value is never parsed again
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
    assert str(info.value) == ("command: unknown name 'port_strat' in template (known: port_start, workdir); did you "
                               "mean 'port_start'?")
    with pytest.raises(TemplateError) as info:
        render("svc {elsewhere}", {"workdir": "/w"}, field="command")
    assert str(info.value) == "command: unknown name 'elsewhere' in template (known: workdir)"  # nothing close


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
        ("{workdir.encode()}", "key: method .encode() is not allowed in templates"),
        ("{config.format()}", "key: method .format() is not allowed on dict values in {config.format()}"),
        (
            "{'{0.__class__}'.format(workdir)}",
            "key: format field '{0.__class__}' uses attribute access, which templates do not allow",
        ),
        ("{'{0[0]}'.format(items)}", "key: format field '{0[0]}' uses indexing, which templates do not allow"),
        (
            "{'{a.b[0]}'.format(a=items)}",
            "key: format field '{a.b[0]}' uses attribute access, which templates do not allow",
        ),
        (
            "{'{0:{1}}'.format(name, width)}",
            "key: format field '{0:{1}}' has a replacement field inside its format spec, which templates do not allow",
        ),
        ("{'{:>99999999}'.format(1)}", "key: format spec '>99999999' asks for more than 100000 characters"),
        (
            "{'{0!x}'.format(name)}",
            "key: format field '{0!x}' has unknown conversion '!x' (use !r, !s or !a)",
        ),
        ("{'x}'.format(name)}", "key: invalid format string 'x}': Single '}' encountered in format string"),
        (
            "{'{a}'.format_map(items)}",
            "key: format_map() argument must be a plain dict, not list in {'{a}'.format_map(items)}",
        ),
        (
            "{'{a}'.format_map(config, a=1)}",
            "key: format_map() takes exactly one argument, a dict (2 given) in {'{a}'.format_map(config, a=1)}",
        ),
        (
            "{('{0}' * 30).format(workdir * 6000)}",
            "key: result would be longer than 100000 characters or items in {('{0}' * 30).format(workdir * 6000)}",
        ),
        ("{'{nope}'.format(name=1)}", "key: cannot evaluate {'{nope}'.format(name=1)}: KeyError: 'nope'"),
        (
            "{'{2}'.format(1)}",
            "key: cannot evaluate {'{2}'.format(1)}: IndexError:"
            " Replacement index 2 out of range for positional args tuple",
        ),
        (
            "{'{}{0}'.format(1)}",
            "key: cannot evaluate {'{}{0}'.format(1)}: ValueError:"
            " cannot switch from automatic field numbering to manual field specification",
        ),
        (
            "{'{0}'.format_map(config)}",
            "key: cannot evaluate {'{0}'.format_map(config)}: ValueError: Format string contains positional fields",
        ),
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


def _config_namespace() -> dict[str, Any]:
    namespace = _namespace()
    namespace["config"] = {
        "range_fmt": "--port-range {} {}",
        "named_fmt": "{host}:{port!r:>6}",
        "braces": "{{literal}} {0}",
        "host": "127.0.0.1",
        "port": 8000,
        "evil": "{0.__class__.__mro__}",
        "evil_index": "{0[network_interface]}",
        "evil_named": "{host.__class__}",
        "nested": "{0:{1}}",
        "wide": "{0:>99999999}",
        "broken": "{0",
    }
    return namespace


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{config['range_fmt'].format(port_start, port_end)}", "--port-range 8000 8010"),
        ("{config['named_fmt'].format_map(config)}", "127.0.0.1:  8000"),
        ("{config['named_fmt'].format(host='h', port='p')}", "h:   'p'"),
        ("{config['braces'].format(name)}", "{literal} demo"),
        ("{config.get('missing', '{}!').format(name)}", "demo!"),
    ],
)
def test_format_string_from_config(template: str, expected: str) -> None:
    assert render(template, _config_namespace(), field="command") == expected


@pytest.mark.parametrize(
    ("template", "refusal"),
    [
        ("{config['evil'].format(workdir)}", "format field '{0.__class__.__mro__}' uses attribute access"),
        ("{config['evil'].format_map(config)}", "format field '{0.__class__.__mro__}' uses attribute access"),
        ("{config['evil_index'].format(config)}", "format field '{0[network_interface]}' uses indexing"),
        ("{config['evil_named'].format_map(config)}", "format field '{host.__class__}' uses attribute access"),
        (
            "{config['nested'].format(name, 99999999)}",
            "format field '{0:{1}}' has a replacement field inside its format spec",
        ),
        ("{config['wide'].format(1)}", "format spec '>99999999' asks for more than 100000 characters"),
        ("{config['broken'].format(1)}", "invalid format string '{0': expected '}' before end of string"),
    ],
)
def test_format_string_from_config_is_checked_when_evaluated(template: str, refusal: str) -> None:
    """A format string only known at evaluation time is parsed and checked then, before any field is formatted."""
    with pytest.raises(TemplateError) as info:
        render(template, _config_namespace(), field="command")
    assert str(info.value).startswith(f"command: {refusal}")


def test_constant_format_string_is_checked_before_anything_runs() -> None:
    with pytest.raises(TemplateError, match=r"^key: format field '\{0.a\}' uses attribute access"):
        render("{x if True else '{0.a}'.format(x)}", _namespace(), field="key")


@pytest.mark.parametrize(
    ("fmt", "args", "kwargs"),
    [
        ("--port-range {} {}", "port_start, port_end", ""),
        ("{0}{1}{0}{1}", "name, timeout", ""),
        ("{٠}-{0}", "name", ""),
        ("{00}/{001}", "name, timeout", ""),
        ("{a}{b}{a}", "", "a=name, b=items"),
        ("{0}:{a}", "name", "a=port_start"),
        ("{!r}|{!s}|{!a}|{!r:>10}", "'é', 'é', 'é', name", ""),
        ("{0!r}|{0!s}|{0!a}|{1!r:>10}", "'é', name", ""),
        (
            "{:>8}|{:<8}|{:^8}|{:*^9}|{:08.3f}|{:+d}|{:x}|{:#o}|{:,}|{:_}|{:e}|{:%}",
            "name, name, name, name, timeout / 7, port_start, 255, 8, 1234567, 1234567, 12345.678, 0.25",
            "",
        ),
        ("{:.2}|{:10.3}|{!r:.4}", "workdir, workdir, workdir", ""),
        ("{{}}{{{}}}{{0}}}}{{", "name", ""),
        ("", "", ""),
        ("{:}", "port_start", ""),
    ],
)
def test_format_matches_str_format(fmt: str, args: str, kwargs: str) -> None:
    """On the fields it allows, the interpreter agrees with str.format, and .format_map() agrees with both."""
    call = ", ".join(part for part in (args, kwargs) if part)
    namespace = _namespace()
    expected = eval(f"{fmt!r}.format({call})", {}, namespace)  # trusted test input: the real thing
    assert render(f"{{{fmt!r}.format({call})}}", namespace, field="command") == expected
    if not args and kwargs:
        namespace["kw"] = eval(f"dict({kwargs})", {}, namespace)
        assert render(f"{{{fmt!r}.format_map(kw)}}", namespace, field="command") == expected


def test_format_and_fstring_fields_agree() -> None:
    namespace = _namespace()
    fstring = render("{name!r:>10}|{timeout:05d}|{items!s:.7}|{timeout / 4:.1f}", namespace, field="command")
    method = render(
        "{'{!r:>10}|{:05d}|{!s:.7}|{:.1f}'.format(name, timeout, items, timeout / 4)}", namespace, field="command"
    )
    assert fstring == method == "    'demo'|00030|['first|7.5"


def test_format_map_takes_only_a_plain_dict() -> None:
    class Sneaky(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            raise AssertionError("a dict subclass must never be consulted")

    namespace = {**_namespace(), "sneaky": Sneaky(a=1)}
    with pytest.raises(TemplateError, match=r"^key: format_map\(\) argument must be a plain dict, not Sneaky in "):
        render("{'{missing}'.format_map(sneaky)}", namespace, field="key")


@pytest.mark.parametrize(
    "template",
    [
        "{'{:>99999999}'.format(1)}",
        "{'{0:.99999999f}'.format(1.5)}",
        "{('{0}' * 20000).format(workdir * 6000)}",
        "{('{0:>99999}' * 2).format(1)}",
        "{('{0:>99999}' * 1000).format(1)}",
    ],
)
def test_oversize_format_is_refused_before_allocating(template: str) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            render(template, _namespace(), field="key")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the unchecked results would take from 10 MB to 1.8 GB


BIG = "b" * 900_000  # a config string near the config's own size limit
BOMBS = {
    "list-repeat": ("command", "echo {['a' * 99999] * 99999}"),
    "tuple-repeat": ("command", "echo {('a' * 99999,) * 99999}"),
    "in-key": ("key", "k{['a' * 99999] * 99999}"),
    "get-default": ("command", "echo {config.get('x', ['a' * 99999] * 99999)}"),
    "format-conversion": ("command", "echo {'{0!s:>5}'.format(['a' * 99999] * 99999)}"),
    "nested-shared": ("command", "echo {[[['a' * 99] * 999] * 999] * 999}"),
    "config-string-repeat": ("command", "echo {[big] * 99999}"),
    "key-error-message": ("command", "echo {config[big]}"),
}


@pytest.mark.parametrize(("field", "template"), list(BOMBS.values()), ids=list(BOMBS))
def test_memory_bomb_is_a_one_line_config_error(tmp_path: Path, field: str, template: str) -> None:
    """Shared items make a huge printed value from little memory: refused before it is built, in well
    under a second of CPU and 100 MB (a guard limit of 1 GB keeps an unbounded build from the machine)."""
    import subprocess
    import sys

    import yaml

    config = {"hostname": "localhost", "workdir": str(tmp_path), "key": "k", "command": "echo hi", field: template}
    if "big" in template:
        config["big"] = BIG
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(config))
    usage = tmp_path / "usage"
    probe = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))\n"
        "from remote_http_launcher.cli import main\n"
        "try:\n"
        "    code = main()\n"
        "finally:\n"
        "    self = resource.getrusage(resource.RUSAGE_SELF)\n"
        # VmHWM, not ru_maxrss: Linux carries the forking process's RSS (pytest's) into ru_maxrss at exec.
        "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        f"    open({str(usage)!r}, 'w').write(f'{{hwm}} {{self.ru_utime + self.ru_stime}}')\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(path), "--dry-run"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "REMOTE_HTTP_LAUNCHER_DIR": str(tmp_path / "state")})
    peak_kib, cpu = usage.read_text().split()
    assert proc.returncode == 2, proc.stderr[-500:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 500, proc.stderr[-500:]
    assert lines[0].startswith(f"error: {field}: "), lines[0]
    assert int(peak_kib) < 100 * 1024, f"peak {int(peak_kib) // 1024} MB"
    assert float(cpu) < 1.0, f"{cpu} s of CPU"


def test_large_config_data_is_read_but_not_printed_whole() -> None:
    """The printed-size cap is for what the template builds and prints: a config larger than the cap may
    still be passed to format_map(), looked up and compared."""
    namespace = {**_namespace(), "config": {"name": "demo", "data": ["x" * 1000] * 300}}
    assert render("{'{name}'.format_map(config)}", namespace, field="key") == "demo"
    assert render("{config.get('data')[1] == 'x' * 1000}", namespace, field="key") == "True"
    with pytest.raises(TemplateError, match=r"^key: result would be longer than 100000 characters"):
        render("{config}", namespace, field="key")


PLAIN_TEXT = ["", "run ", " --port ", "-", "{{", "}}", "{{x}}", '"q"', "'q'", "\\", "é", "\t", "}", "{", "a}b", "{ x}"]
PLAIN_FIELDS = ["{workdir}", "{port_start}", "{name}", "{flag}", "{timeout}", "{config}", "{items}", "{big}",
                "{huge}", "{long}", "{ratio}", "{nothing}", "{_private}", "{missing}", "{class}", "{None}", "{ﬁle}",
                "{name!r}", "{timeout:>6}", "{name.upper()}", "{ name }", "{x}}", "{a+b}"]


def _plain_namespace() -> dict[str, Any]:
    return {**_namespace(), "big": 10**17, "huge": 10**5000, "long": "l" * 100_001, "ratio": 0.25, "nothing": None,
            "_private": "p", "class": "c", "None": "n", "file": "f"}


def test_plain_templates_render_as_the_sandbox_renders_them() -> None:
    """The plain path (no `ast`) and the sandbox agree on every template, errors included."""
    from remote_http_launcher.templates import names_used, sandbox

    rng = random.Random(7)
    namespace = _plain_namespace()
    rendered = 0
    for _ in range(3000):
        template = "".join(rng.choice(PLAIN_TEXT if i % 2 == 0 else PLAIN_FIELDS) for i in range(rng.randint(1, 6)))
        try:
            expected: Any = sandbox.render(template, namespace, field="command")
        except TemplateError as exc:
            expected = exc
        try:
            got: Any = render(template, namespace, field="command")
        except TemplateError as exc:
            got = exc
        assert type(got) is type(expected) and str(got) == str(expected), template
        assert names_used(template) == sandbox.names_used(template), template
        rendered += isinstance(got, str)
    assert 300 < rendered < 3000  # both outcomes, often


def test_a_plain_template_renders_without_the_sandbox() -> None:
    """`{name}` fields only: rendered and their names told without importing `ast` (a first launch's cost)."""
    code = ("import sys; from remote_http_launcher.templates import render, names_used; "
            "print(render('serve {a} --x={b} {{c}}', {'a': '/w', 'b': 8}, field='command'), "
            "sorted(names_used('{a}-{b}')), 'ast' in sys.modules, "
            "'remote_http_launcher.templates.sandbox' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.stdout.split("\n")[0] == "serve /w --x=8 {c} ['a', 'b'] False False"
