"""Read the plain YAML most configs are written in, without importing PyYAML.

Importing PyYAML compiles its scanner's and resolver's regular expressions:
about a third of a first launch's own time. Configs are nearly always block
mappings of scalars, short lists and folded commands, which this module
reads with string methods alone. It answers only where its reading is
certainly PyYAML's (safe loader, YAML 1.1 implicit types); for anything else
-- flow mappings, anchors, tags, escapes, multi-line quoted scalars, odd
numbers, duplicate keys, errors -- it returns None and the caller asks PyYAML,
which also words the errors. A test compares both on generated documents.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_BOOLS = {word: value for value, words in ((True, ("yes", "true", "on")), (False, ("no", "false", "off")))
          for lower in words for word in (lower, lower.capitalize(), lower.upper())}
_NULLS = ("", "~", "null", "Null", "NULL")
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_/$(~")  # a plain scalar may start with
_CONTINUED = _FIRST | frozenset("0123456789-{")  # a plain scalar's next line may start with
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_BLOCK_HEADS = {"|": ("\n", "\n"), "|-": ("\n", ""), ">": (" ", "\n"), ">-": (" ", "")}  # line joint, last break


def load(text: str) -> dict[str, Any] | None:
    """The mapping PyYAML's safe loader makes of `text`, or None where this reader cannot tell."""
    if not _plain_characters(text):
        return None
    lines = text.split("\n")
    try:
        data, end = _Reader(lines).mapping(_next_content(lines, 0), 0)
    except ValueError:  # outside what this reader is sure of: PyYAML's to read
        return None
    return data if data and _next_content(lines, end) == len(lines) else None


def _plain_characters(text: str) -> bool:
    """No tab, carriage return, BOM, control character or YAML 1.1 line break other than `\\n`."""
    if text.isascii():
        return all(" " <= c <= "~" or c == "\n" for c in text)
    for c in text:
        o = ord(c)
        if not (0x20 <= o <= 0x7E or c == "\n" or (0xA0 <= o <= 0xD7FF and o not in (0x2028, 0x2029))
                or (0xE000 <= o <= 0xFFFD and o != 0xFEFF) or o >= 0x10000):
            return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _next_content(lines: list[str], i: int) -> int:
    """The index of the first line from `i` on that is neither blank nor a comment (len(lines): none)."""
    while i < len(lines):
        stripped = lines[i].strip(" ")
        if stripped and not stripped.startswith("#"):
            return i
        i += 1
    return i


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def mapping(self, i: int, indent: int) -> tuple[dict[str, Any], int]:
        """The block mapping whose keys start at column `indent` from line `i`; the index after it."""
        result: dict[str, Any] = {}
        while i < len(self.lines) and _indent(self.lines[i]) == indent:
            line = self.lines[i][indent:]
            key, colon, rest = line.partition(":")
            if not colon or not key or key[0] not in _FIRST or not set(key) <= _KEY_CHARS or key in _BOOLS \
                    or key in _NULLS or key in result or rest[:1] not in ("", " "):
                raise ValueError
            result[key], i = self.value(rest.strip(" "), i, indent)
            i = _next_content(self.lines, i)
        if i < len(self.lines) and _indent(self.lines[i]) > indent:
            raise ValueError
        return result, i

    def value(self, text: str, i: int, indent: int) -> tuple[Any, int]:
        """The value written after a key's colon (`text`) on line `i` and maybe below; the index after it."""
        if text.startswith("#"):
            text = ""
        if text in _BLOCK_HEADS or text.split(" #", 1)[0].rstrip(" ") in _BLOCK_HEADS:
            return self.block_scalar(text.split(" ", 1)[0], i + 1, indent)
        if text:
            end = i + 1
            while end < len(self.lines) and self.lines[end].strip(" ") and _indent(self.lines[end]) > indent:
                line = self.lines[end].strip(" ")  # a plain scalar going on: its lines are joined by spaces
                if text[0] in "'\"[" or " #" in text or line[0] not in _CONTINUED or line.startswith("- "):
                    raise ValueError
                text += " " + line
                end += 1
            following = _next_content(self.lines, end)
            if following < len(self.lines) and _indent(self.lines[following]) > indent:
                raise ValueError  # more after an empty line or a comment, or a mapping after a value
            return scalar(text), end
        child = _next_content(self.lines, i + 1)
        if child == len(self.lines):
            return None, child
        child_indent = _indent(self.lines[child])
        if self.lines[child][child_indent:].startswith("- ") and child_indent >= indent:
            return self.sequence(child, child_indent)
        if child_indent > indent:
            return self.mapping(child, child_indent)
        return None, child

    def sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        """A block sequence of scalars, its dashes at column `indent`."""
        items: list[Any] = []
        while i < len(self.lines) and _indent(self.lines[i]) == indent and self.lines[i][indent:].startswith("- "):
            text = self.lines[i][indent + 2:].strip(" ")
            if not text or text.startswith(("- ", "#")) or text.split(" #", 1)[0].rstrip(" ") in _BLOCK_HEADS:
                raise ValueError
            following = _next_content(self.lines, i + 1)
            if following < len(self.lines) and _indent(self.lines[following]) > indent:
                raise ValueError
            items.append(scalar(text))
            i = following
        return items, i

    def block_scalar(self, head: str, i: int, indent: int) -> tuple[str, int]:
        """A literal (`|`) or folded (`>`) scalar, clipped or stripped, of lines all at one indentation
        with no blank line: the cases where folding has one plain reading."""
        joint, last = _BLOCK_HEADS[head]
        if i >= len(self.lines) or not self.lines[i].strip(" "):
            raise ValueError
        column = _indent(self.lines[i])
        if column <= indent:
            raise ValueError
        parts = []
        while i < len(self.lines) and _indent(self.lines[i]) >= column and self.lines[i].strip(" "):
            line = self.lines[i]
            if _indent(line) != column or line.endswith(" "):
                raise ValueError
            parts.append(line[column:])
            i += 1
        end = i
        while end < len(self.lines) and len(self.lines[end]) < column and not self.lines[end].strip(" "):
            end += 1  # empty lines after the text: clipping and stripping drop them
        if end < len(self.lines) and _indent(self.lines[end]) > indent:
            raise ValueError  # more text after an empty line (folded by rules left to PyYAML), or a misfit
        return joint.join(parts) + (last if i < len(self.lines) else ""), i  # no break after the text's end


def scalar(text: str) -> Any:
    """A one-line scalar as written after `key: ` or `- `, with its comment if any."""
    if text[0] == "'":
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        if end == -1 or not _only_comment(text[end + 1:]):
            raise ValueError
        return text[1:end].replace("''", "'")
    if text[0] == '"':
        end = text.find('"', 1)
        if end == -1 or "\\" in text[:end] or not _only_comment(text[end + 1:]):
            raise ValueError
        return text[1:end]
    if text[0] == "[":
        return _quoted_list(text)
    value = text.split(" #", 1)[0].rstrip(" ")
    if ": " in value or value.endswith(":"):
        raise ValueError
    if value[0].isdigit():
        return _number(value)
    if value[0] not in _FIRST:
        raise ValueError
    if value in _BOOLS:
        return _BOOLS[value]
    return None if value in _NULLS else value


def _quoted_list(text: str) -> list[str]:
    """A one-line flow sequence of quoted strings, `["--time=1:00:00", '-c 2']`, or `[]`."""
    items: list[str] = []
    rest = text[1:].lstrip(" ")
    while not rest.startswith("]"):
        quote = rest[:1]
        end = rest.find(quote, 1) if quote in ("'", '"') else -1
        if end == -1 or "\\" in rest[1:end] or rest[end + 1:end + 2] == quote:
            raise ValueError  # unquoted, unterminated, escaped or doubled quotes: PyYAML's
        items.append(rest[1:end])
        rest = rest[end + 1:].lstrip(" ")
        if rest.startswith(","):
            rest = rest[1:].lstrip(" ")
            if rest.startswith("]"):
                raise ValueError
        elif not rest.startswith("]"):
            raise ValueError
    if not _only_comment(rest[1:]):
        raise ValueError
    return items


def _only_comment(rest: str) -> bool:
    stripped = rest.lstrip(" ")
    return not stripped or (stripped.startswith("#") and stripped != rest)


def _number(value: str) -> int | float | str:
    """A decimal integer or a `digits.digits` float, as YAML 1.1 reads them; other digit-led words
    (octal 0NN, 1_000, 1:30 sexagesimal, dates, exponents, versions) are PyYAML's to read."""
    if value.count(".") > 1 and value.replace(".", "").isdigit() and value.isascii():
        return value  # an IPv4 address or a version: no YAML 1.1 number has two dots
    whole, dot, fraction = value.partition(".")
    if whole.isascii() and whole.isdigit() and (whole == "0" or whole[0] != "0"):
        if not dot:
            return int(whole)
        if fraction.isascii() and fraction.isdigit():
            return float(value)
    raise ValueError
