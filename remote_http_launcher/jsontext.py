"""JSON text exactly as the standard library's `json.dumps` writes it and `json.loads` reads it, without
importing `json`.

A first launch writes its lock and the status record's head before the
service starts; importing `json` there (it brings `re` and `enum`) costs
about a quarter of the launcher's own start-up, so it is imported only once
the service is starting. Strings, numbers, booleans, None, lists, tuples and
dicts with string keys are written here; anything else (other keys, other
types, a value that contains itself) is left to `json.dumps`, which writes
it or raises as it always did.

Reading (`loads`) uses the C scanner json.loads itself uses (`_json`): `json`'s
decoder compiles regular expressions at import, importing `re`, a tenth of a
warm run. A document that scanner does not take at once (not UTF-8, a BOM, not
one JSON value, no `_json`) goes to json.loads, which reads or refuses it as
it always does.
"""

from __future__ import annotations

from .records import cache

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# json's own escapes; every other character outside ' '..'~' is written as \\uXXXX (lower-case hex)
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_FIRST_ASTRAL = 0x10000
_SURROGATE_BITS = 10


def dumps(obj: Any, *, indent: int | None = None, separators: tuple[str, str] | None = None) -> str:
    """`json.dumps(obj, indent=indent, separators=separators)` with its other options at their defaults
    (ensure_ascii, allow_nan, no sort_keys)."""
    if separators is None:
        separators = (", " if indent is None else ",", ": ")
    parts: list[str] = []
    if _write(obj, parts, separators, None if indent is None else " " * indent, 0, set()):
        return "".join(parts)
    import json  # a value this module does not write: json writes (or refuses) the whole object

    return json.dumps(obj, indent=indent, separators=separators)


def string(text: str) -> str:
    """A JSON string literal, ASCII only, as json.dumps writes `text`."""
    if text.isascii() and text.isprintable():  # all of ' '..'~': only `"` and `\` are escaped
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    out = ['"']
    for char in text:
        if " " <= char <= "~" and char not in _ESCAPES:
            out.append(char)
            continue
        escape = _ESCAPES.get(char)
        if escape is not None:
            out.append(escape)
            continue
        code = ord(char)
        if code >= _FIRST_ASTRAL:  # a surrogate pair
            code -= _FIRST_ASTRAL
            out.append(f"\\u{0xD800 | (code >> _SURROGATE_BITS):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _write(obj: Any, parts: list[str], separators: tuple[str, str], indent: str | None, level: int,
           open_ids: set[int]) -> bool:
    """Append `obj`'s text to `parts`; False for a value left to json. In json's order of checks: str, None,
    True, False, int, float, list/tuple, dict."""
    if isinstance(obj, str):
        parts.append(string(obj))
    elif obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, int):
        parts.append(int.__repr__(obj))
    elif isinstance(obj, float):
        parts.append(_float(obj))
    elif isinstance(obj, (list, tuple, dict)):
        if id(obj) in open_ids:  # it contains itself
            return False
        open_ids.add(id(obj))
        if not _container(obj, parts, separators, indent, level, open_ids):
            return False
        open_ids.discard(id(obj))
    else:
        return False
    return True


def _container(obj: list[Any] | tuple[Any, ...] | dict[Any, Any], parts: list[str], separators: tuple[str, str],
               indent: str | None, level: int, open_ids: set[int]) -> bool:
    opening, closing = ("{", "}") if isinstance(obj, dict) else ("[", "]")
    if not obj:
        parts.append(opening + closing)
        return True
    item_separator, key_separator = separators
    if indent is not None:
        level += 1
        item_separator += "\n" + indent * level
        parts.append(opening + "\n" + indent * level)
    else:
        parts.append(opening)
    first = True
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):  # json turns numbers, booleans and None into names: left to it
                return False
            if not first:
                parts.append(item_separator)
            first = False
            parts.append(string(key) + key_separator)
            if not _write(value, parts, separators, indent, level, open_ids):
                return False
    else:
        for value in obj:
            if not first:
                parts.append(item_separator)
            first = False
            if not _write(value, parts, separators, indent, level, open_ids):
                return False
    if indent is not None:
        parts.append("\n" + indent * (level - 1))
    parts.append(closing)
    return True


INFINITY = float("inf")


def is_finite(value: float) -> bool:
    """`math.isfinite` for a float, without loading `math` (a shared library) on the warm path."""
    return value - value == 0.0


def _float(value: float) -> str:
    if not is_finite(value):
        return "Infinity" if value == INFINITY else "-Infinity" if value == -INFINITY else "NaN"
    return float.__repr__(value)


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`: the same value, or the same error."""
    obj = _scan(data)
    if obj is _NOT_SCANNED:
        import json

        return json.loads(data)
    return obj


class _DecoderDefaults:
    """What json.JSONDecoder() gives its C scanner: json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": -INFINITY, "Infinity": INFINITY, "NaN": float("nan")}.__getitem__


_NOT_SCANNED = object()
_SPACE = " \t\n\r"  # JSON's whitespace


@cache
def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        from _json import make_scanner
    except ImportError:  # an interpreter without json's C half
        return None
    return make_scanner(_DecoderDefaults())  # type: ignore[arg-type]  # typeshed: a context of its own type


def _scan(data: bytes | str) -> Any:
    """The value of a UTF-8 document the scanner takes whole, else _NOT_SCANNED. A document it takes has no
    NUL (a control character in a string is refused, strict), so json.loads too would read it as UTF-8
    (tests/test_jsontext.py compares the two)."""
    scanner = _scanner()
    if scanner is None:
        return _NOT_SCANNED
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return _NOT_SCANNED
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        obj, end = scanner(text, start)
    except (StopIteration, ValueError, RecursionError):
        return _NOT_SCANNED
    return _NOT_SCANNED if text[end:].strip(_SPACE) else obj
