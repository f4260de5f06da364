"""jsontext.dumps against the standard library's json.dumps: the same text for generated values, the same
errors for what JSON cannot hold, and no `json` imported for the values it writes itself."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import jsontext

# every kind of character json treats alike: escaped by name, by \u, printable ASCII, non-ASCII, astral,
# lone surrogates (a str may hold them; json writes them as \udXXX)
CHARS = ([chr(c) for c in range(0x80)] + ["\u0080", "\u00e9", "\u2028", "\u2029", "\ufeff", "\uffff", "\ud800",
                                          "\udbff", "\udc00", "\udfff", "\U00010000", "\U0001f600", "\U0010ffff"])
FLOATS = [0.0, -0.0, 1.5, -2.25, 1e-320, 5e-324, 1.7976931348623157e308, 1e16, 1e22, 0.1, 1 / 3, 123456789.125,
          math.inf, -math.inf, math.nan]
INTS = [0, 1, -1, 2**31, -(2**63), 2**64 + 1, 10**100]
OPTIONS: list[dict[str, Any]] = [{}, {"indent": 2}, {"indent": 0}, {"indent": 4},
                                 {"separators": (", ", ": ")}, {"separators": (",", ":")},
                                 {"indent": 2, "separators": (",", ": ")}]


def text(rng: random.Random) -> str:
    length = rng.choice([0, 1, 2, 5, 20])
    if rng.random() < 0.3:  # mostly printable ASCII: the fast path
        return "".join(rng.choice(CHARS[32:127]) for _ in range(length))
    return "".join(rng.choice(CHARS) for _ in range(length))


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return text(rng)
    if kind == 1:
        return rng.choice([None, True, False])
    if kind == 2:
        return rng.choice(INTS) if rng.random() < 0.3 else rng.randint(-10**6, 10**6)
    if kind == 3:
        return rng.choice(FLOATS) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30)
    if kind in (4, 5):
        return text(rng)
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return {text(rng): value(rng, depth + 1) for _ in range(rng.randrange(5))}


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_generated_values_are_written_as_json_dumps_writes_them(options: dict[str, Any]) -> None:
    rng = random.Random(f"jsontext {options}")
    for _ in range(3000):
        obj = value(rng)
        assert jsontext.dumps(obj, **options) == json.dumps(obj, **options), obj


def test_every_character_is_escaped_as_json_escapes_it() -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1))
    assert jsontext.string(every) == json.dumps(every)
    for char in every[:0x3000]:
        assert jsontext.string(char) == json.dumps(char)


def test_the_state_records_written_before_a_launch() -> None:
    lock = {"owner": "host\u00e9", "pid": 123, "started": "proc:42", "time": 1796680595.3445492, "token": "ab" * 16}
    head = {"workdir": "/w d", "log": "/s/k.log", "command": "serve --x 'a\\b' \"q\"\n\t", "status": "starting",
            "file_parameters": {"a": [1, 2.5, None, True, {"b": "\U0001f600"}]}, "meta": {}, "port_range": [1, 2]}
    for record in (lock, head):
        assert jsontext.dumps(record) == json.dumps(record)
        assert jsontext.dumps(record, separators=(", ", ": ")) == json.dumps(record, separators=(", ", ": "))
        assert jsontext.dumps(record, indent=2) == json.dumps(record, indent=2)


class Number(int):
    def __repr__(self) -> str:
        return "not used by json"


class Text(str):
    pass


def test_subclasses_are_written_as_their_base_types() -> None:
    obj = {Text("k"): [Number(7), Text("v\n"), type("F", (float,), {"__repr__": lambda self: "x"})(2.5)]}
    assert jsontext.dumps(obj) == json.dumps(obj)


@pytest.mark.parametrize("obj", [{1: "a"}, {None: 1, "b": 2}, {1.5: [True]}, {True: 0}, [{2: 3}]], ids=str)
def test_keys_that_are_not_strings_are_named_as_json_names_them(obj: Any) -> None:
    assert jsontext.dumps(obj, indent=2) == json.dumps(obj, indent=2)


def test_what_json_refuses_is_refused_alike() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    for obj in ({"a": {1, 2}}, [b"bytes"], looped, {(1, 2): 3}):
        with pytest.raises((TypeError, ValueError)) as theirs:
            json.dumps(obj)
        with pytest.raises(type(theirs.value)) as ours:
            jsontext.dumps(obj)
        assert str(ours.value) == str(theirs.value)


def test_a_value_repeated_without_a_loop_is_written_each_time() -> None:
    shared = {"x": [1]}
    obj = [shared, shared, {"again": shared}]
    assert jsontext.dumps(obj) == json.dumps(obj)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, -2.5, 5e-324, sys.float_info.max, -sys.float_info.max,
                                   math.inf, -math.inf, math.nan])
def test_finite_numbers_are_told_as_math_tells_them(value: float) -> None:
    assert jsontext.is_finite(value) == math.isfinite(value)


def test_writing_the_supported_values_imports_no_json() -> None:
    code = ("import sys; from remote_http_launcher import jsontext; "
            "jsontext.dumps({'a': ['\\u00e9\\n', 1, 2.5, float('nan'), None, True, (), {}]}, indent=2); "
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    # -S: an editable install's import hook, which site loads, imports `re` itself
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(jsontext.__file__).parents[1])}).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- reading


def documents(rng: random.Random) -> bytes:
    """A generated JSON document, often damaged: cut, a byte changed or added, other encodings, BOMs."""
    obj = value(rng)
    if rng.random() < 0.5:
        obj = {text(rng): obj, "pid": rng.choice(INTS)}
    data = json.dumps(obj, ensure_ascii=rng.random() < 0.5, **rng.choice(OPTIONS)).encode(errors="surrogatepass")
    data = rng.choice([b"", b" ", b"\n", b"\t\r\n "]) + data + rng.choice([b"", b"\n", b"  \n", b"x", b"{}"])
    damage = rng.randrange(8)
    if damage == 0 and data:
        data = data[:rng.randrange(len(data))]
    elif damage == 1 and data:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
    elif damage == 2:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.choice([b"\x00", b"\xef\xbb\xbf", b"\\", b'"', b"\xff", b"\x1f", b"NaN"]) + data[at:]
    elif damage == 3:
        data = data.decode(errors="surrogatepass").encode(
            rng.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]), errors="surrogatepass")
    return data


def test_documents_are_read_as_json_loads_reads_them() -> None:
    """jsontext.loads gives what json.loads gives (values, their types and their order: compared as repr) or
    raises what it raises; most well-formed UTF-8 documents are read without json."""
    rng = random.Random(20261207)
    scanned = 0
    for _ in range(20000):
        data = documents(rng)
        given_as: list[bytes | str] = [data]
        try:
            given_as.append(data.decode(errors="surrogatepass"))
        except UnicodeDecodeError:
            pass
        for given in given_as:
            try:
                expected: object = repr(json.loads(given))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                expected = type(exc)
            try:
                found: object = repr(jsontext.loads(given))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                found = type(exc)
            assert found == expected, given
        scanned += jsontext._scan(data) is not jsontext._NOT_SCANNED
    assert scanned > 5000


def test_reading_a_document_imports_no_json() -> None:
    record = r'{"pid": 1, "port": 8000, "x": [1.5, null, "\u00e9"]}'
    probe = ("import sys; from remote_http_launcher import statefiles; "
             f"assert statefiles.decode({record!r}.encode())['x'][2] == 'é'; "
             "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(jsontext.__file__).parent.parent)})
    assert result.stdout.strip() == "[]", result.stderr
