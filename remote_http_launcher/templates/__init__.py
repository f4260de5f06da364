"""The f-string templates of the `key` and `command` fields.

Most templates only put fields in place (`{status_file} --port {port}`). Those
are rendered here by scanning the text, exactly as the sandbox would render
them, without importing `ast` and the sandbox (a tenth of a first launch).
Anything else -- an expression, a conversion or spec, a quote or backslash, a
name the namespace lacks, an oversized value -- goes to `sandbox`, which
whitelists the parsed template node by node and words every error.
"""

from __future__ import annotations

from keyword import iskeyword

from .limits import MAX_TEMPLATE_CHARS, MAX_VALUE_LEN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_MAX_PLAIN_FIELDS = 100  # far below the sandbox's node limit, which then never applies here
_PLAIN_INT = 10**18  # str() of a smaller int is short and never hits the int-to-str digit limit
_ABSENT = object()


def render(template: str, namespace: Mapping[str, Any], *, field: str, hints: Mapping[str, str] | None = None) -> str:
    """Evaluate an f-string template; raises TemplateError naming `field`. `hints`: names the template
    may not read here, each with what to say when it does (or "": a name only for "did you mean")."""
    plain = _plain_render(template, namespace)
    if plain is not None:
        return plain
    from . import sandbox

    return sandbox.render(template, namespace, field=field, hints=hints)


def names_used(template: str) -> frozenset[str] | None:
    """The config fields `template` may read, to tell a misspelt field from a template variable: its
    names, and the words of every string inside a replacement field (`config["port-start"]`,
    `config.get("dashboard")`, a format string's `{name}`); None when that cannot be told (the template
    does not parse, or reads `config` by a computed key: `config[name]`, `config.items()`)."""
    parts = _plain_parts(template)
    if parts is not None:
        names = frozenset(parts[1::2])
        return None if "config" in names else names
    from . import sandbox

    return sandbox.names_used(template)


def _plain_parts(template: object) -> list[str] | None:
    """[text, name, text, name, ..., text] for a template whose replacement fields are all plain names,
    written so that the sandbox's parse (a raw f-string) reads the same; None for any other."""
    if not isinstance(template, str) or len(template) > MAX_TEMPLATE_CHARS or not template.isprintable() \
            or "'" in template or "\\" in template:
        return None
    parts: list[str] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        opening, closing = template.find("{", i), template.find("}", i)
        if closing != -1 and (opening == -1 or closing < opening):  # literal text up to a `}`: must be `}}`
            if template[closing + 1:closing + 2] != "}":
                return None
            text.append(template[i:closing + 1])
            i = closing + 2
        elif opening == -1:
            text.append(template[i:])
            break
        elif template[opening + 1:opening + 2] == "{":
            text.append(template[i:opening + 1])
            i = opening + 2
        else:
            text.append(template[i:opening])
            name = template[opening + 1:closing] if closing != -1 else ""
            if not (name.isascii() and name.isidentifier()) or iskeyword(name) \
                    or len(parts) >= 2 * _MAX_PLAIN_FIELDS:
                return None
            parts += ["".join(text), name]
            text = []
            i = closing + 1
    parts.append("".join(text))
    return parts


def _plain_render(template: str, namespace: Mapping[str, Any]) -> str | None:
    """The template rendered when its fields are plain names of plain values in `namespace`, else None."""
    parts = _plain_parts(template)
    if parts is None:
        return None
    for at in range(1, len(parts), 2):
        name = parts[at]
        value = namespace.get(name, _ABSENT) if not name.startswith("_") else _ABSENT
        if (type(value) is int and -_PLAIN_INT < value < _PLAIN_INT) or type(value) in (float, bool, type(None)) \
                or (type(value) is str and len(value) <= MAX_VALUE_LEN):
            parts[at] = format(value, "")
        else:
            return None  # an unknown or private name, or a value the sandbox sizes up: its checks and words
    result = "".join(parts)
    return result if len(result) <= MAX_VALUE_LEN else None
