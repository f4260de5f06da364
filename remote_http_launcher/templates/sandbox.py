"""The sandbox: safe evaluation of any f-string template in the `key` and `command` fields.

Templates come from configuration files, so they are treated as untrusted: the
template is parsed (never compiled) with `ast`, every node is checked against a
whitelist before anything runs, and a small interpreter evaluates the result.
There are no builtins, no private names, no plain-name calls and only a fixed
set of methods on plain data types; sizes are capped so that a template can
neither crash the launcher nor exhaust its memory.

`str.format()` and `str.format_map()` are allowed but never called: the format
string may be a config value, known only when the call is evaluated, so the
interpreter parses it then with `string.Formatter().parse` (a constant one is
also checked with the rest of the template, before anything runs), refuses it
unless every field is plain, and formats the fields itself. A plain field is
automatic (`{}`), positional (`{0}`) or a name (`{name}`), optionally with a
conversion (`!r`, `!s`, `!a`) and a format spec; attribute access
(`{0.__class__}`), indexing (`{0[key]}`) and replacement fields nested in a spec
(`{0:{1}}`) are refused. Each field takes the f-string path (same conversions,
same spec check, `format()`), the result is held to the size cap field by
field, and `format_map()` takes exactly one plain dict.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar, cast

from ..errors import TemplateError, near_miss
from .limits import MAX_TEMPLATE_CHARS, MAX_VALUE_LEN

MAX_NODES = 500
MAX_DEPTH = 50
T = TypeVar("T")

_STR_METHODS = frozenset(
    "strip lstrip rstrip replace lower upper split rsplit splitlines join startswith endswith"
    " zfill title capitalize removeprefix removesuffix partition rpartition count find rfind"
    " isdigit isalnum isalpha".split()
)
# Interpreted by _format_string, never called: see the module docstring.
_FORMAT_METHODS = frozenset({"format", "format_map"})
_SEQ_METHODS = frozenset({"index", "count"})
# Exact types only: a subclass could override a whitelisted method.
_METHODS: dict[type, frozenset[str]] = {
    str: _STR_METHODS | _FORMAT_METHODS,
    dict: frozenset({"get", "keys", "values", "items"}),
    list: _SEQ_METHODS,
    tuple: _SEQ_METHODS,
}
_ALL_METHODS = frozenset().union(*_METHODS.values())

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARYOPS: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CONVERSIONS: dict[str, Callable[[Any], str]] = {"s": str, "r": repr, "a": ascii}
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_ALLOWED_NODES = (
    ast.JoinedStr, ast.FormattedValue, ast.Constant, ast.Name, ast.Load, ast.Subscript,
    ast.Slice, ast.Attribute, ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp,
    ast.And, ast.Or, ast.Compare, ast.IfExp, ast.Tuple, ast.List,
    *_BINOPS, *_UNARYOPS, *_CMPOPS,
)  # fmt: skip
_REFUSED_NAMES: dict[type, str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.NamedExpr: "an assignment expression (:=)",
    ast.Starred: "star unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Dict: "a dict display",
    ast.Set: "a set display",
    ast.Pow: "the ** operator",
    ast.LShift: "the << operator",
    ast.RShift: "the >> operator",
    ast.BitAnd: "the & operator",
    ast.BitOr: "the | operator",
    ast.BitXor: "the ^ operator",
    ast.MatMult: "the @ operator",
}
_QUOTES = ("'''", '"""', "'", '"')


def names_used(template: str) -> frozenset[str] | None:
    """The config fields `template` may read, to tell a misspelt field from a template variable: its
    names, and the words of every string inside a replacement field (`config["port-start"]`,
    `config.get("dashboard")`, a format string's `{name}`); None when that cannot be told (the template
    does not parse, or reads `config` by a computed key: `config[name]`, `config.items()`)."""
    try:
        tree = _parse(template)
    except TemplateError:
        return None
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    used: set[str] = set()
    for field in tree.values:  # the literal text between replacement fields reads nothing
        for node in ast.walk(field) if isinstance(field, ast.FormattedValue) else ():
            if isinstance(node, ast.Name):
                if node.id == "config" and not _constant_lookup(node, parents):
                    return None
                used.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)
                used.update(re.findall(r"[^\s{}\[\]!:.'\"]+", node.value))
    return frozenset(used)


def _constant_lookup(node: ast.Name, parents: Mapping[int, ast.AST]) -> bool:
    """`config[CONSTANT]`, `config.get(CONSTANT, ...)` or `CONSTANT.format_map(config)`: which fields
    that reads is in the template's strings."""
    parent = parents.get(id(node))
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return isinstance(parent.slice, ast.Constant)
    call = parents.get(id(parent))
    if isinstance(parent, ast.Attribute) and parent.attr == "get" and isinstance(call, ast.Call):
        return bool(call.args) and isinstance(call.args[0], ast.Constant)
    return (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
            and parent.func.attr == "format_map" and isinstance(parent.func.value, ast.Constant))


def render(template: str, namespace: Mapping[str, Any], *, field: str, hints: Mapping[str, str] | None = None) -> str:
    """Evaluate an f-string template; raises TemplateError naming `field`. `hints`: names the template
    may not read here, each with what to say when it does (or "": a name only for "did you mean")."""
    try:
        if not isinstance(template, str):
            raise TemplateError(f"template must be a string, not {type(template).__name__}")
        if len(template) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"template is too long ({len(template)} > {MAX_TEMPLATE_CHARS} characters)")
        tree = _parse(template)
        _validate(tree, namespace, hints or {})
        return _Interpreter(namespace).render(tree)
    except TemplateError as exc:
        raise TemplateError(" ".join(f"{field}: {exc}".splitlines())) from None


def _parse(template: str) -> ast.JoinedStr:
    """Parse `template` as the body of a raw f-string literal.

    Python 3.11 forbids the delimiting quote inside replacement fields, so each
    quote style the template does not contain is tried. Whatever parses is then
    whitelisted node by node, so a template that breaks out of the literal gains
    nothing. A raw literal cannot end in a backslash, so trailing backslashes are
    set aside and appended as literal text.
    """
    body = template.rstrip("\\")
    errors: list[str] = []
    for quote in _QUOTES:
        if quote in body:
            continue
        try:
            tree = ast.parse(f"rf{quote}{body}{quote}", mode="eval")
        except SyntaxError as exc:
            errors.append(exc.msg)
            continue
        except (ValueError, RecursionError, MemoryError) as exc:
            raise TemplateError(f"cannot parse template: {type(exc).__name__}: {exc}") from None
        if isinstance(tree.body, ast.JoinedStr):
            if len(body) < len(template):
                tree.body.values.append(ast.Constant(template[len(body) :]))
            return tree.body
    raise TemplateError(f"invalid template syntax: {errors[0] if errors else 'it contains every kind of quote'}")


def _validate(tree: ast.JoinedStr, namespace: Mapping[str, Any], hints: Mapping[str, str]) -> None:
    """Refuse anything outside the whitelist before any of the template runs.

    The walk is iterative and bounded so huge or deeply nested input is refused
    instead of overflowing the stack of the checks or of the interpreter.
    """
    nodes: list[ast.AST] = []
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TemplateError(f"template is nested too deeply (more than {MAX_DEPTH} levels)")
        nodes.append(node)
        if len(nodes) > MAX_NODES:
            raise TemplateError(f"template is too complex (more than {MAX_NODES} syntax nodes)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))

    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            name = _REFUSED_NAMES.get(type(node), type(node).__name__)
            raise TemplateError(f"{name} is not allowed in templates")
        if isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANT_TYPES):
            raise TemplateError(f"{type(node.value).__name__} constants are not allowed in templates")

    method_nodes = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise TemplateError(f"name {node.id!r} is not allowed in templates (names starting with '_' are private)")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise TemplateError(
                f"attribute {node.attr!r} is not allowed in templates (names starting with '_' are private)"
            )
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Attribute):
                raise TemplateError(
                    f"calling {_snippet(node.func)}() is not allowed in templates"
                    " (only methods such as .strip() can be called)"
                )
            if any(keyword.arg is None for keyword in node.keywords):
                raise TemplateError("** unpacking is not allowed in templates")
        if isinstance(node, ast.Attribute):
            if id(node) not in method_nodes:
                raise TemplateError(
                    f"attribute access .{node.attr} is not allowed in templates (only method calls such as .strip())"
                )
            if node.attr not in _ALL_METHODS:
                raise TemplateError(f"method .{node.attr}() is not allowed in templates")
            receiver = node.value.value if isinstance(node.value, ast.Constant) else None
            if node.attr in _FORMAT_METHODS and isinstance(receiver, str):
                _parse_format(receiver)  # a constant format string is refused before anything runs
        if isinstance(node, ast.Name) and node.id not in namespace:
            raise TemplateError(_unknown_name(node.id, namespace, hints))


def _unknown_name(name: str, namespace: Mapping[str, Any], hints: Mapping[str, str]) -> str:
    """The error for a name the template cannot read: the hint for it, or the name it is close to."""
    known = sorted(key for key in namespace if not key.startswith("_"))
    message = f"unknown name {name!r} in template (known: {', '.join(known)})"
    if hints.get(name):
        return f"{message}; {hints[name]}"
    close = near_miss(name, [*known, *hints])
    return f"{message}; did you mean {close!r}?" if close else message


class _Interpreter:
    """Evaluates a validated template tree; only the whitelisted nodes are handled."""

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace

    def render(self, tree: ast.JoinedStr) -> str:
        """Evaluate each replacement field, reporting failures with the field's text."""
        parts: list[str] = []
        for node in tree.values:
            if isinstance(node, ast.Constant):
                parts.append(str(node.value))
                continue
            assert isinstance(node, ast.FormattedValue)
            try:
                parts.append(self._formatted(node))
            except TemplateError as exc:
                raise TemplateError(f"{exc} in {{{_snippet(node.value)}}}") from None
            except Exception as exc:  # the template's own errors: KeyError, TypeError, MemoryError, ...
                raise TemplateError(f"cannot evaluate {{{_snippet(node.value)}}}: {_describe(exc)}") from None
        return _checked("".join(parts))

    def _joined(self, node: ast.JoinedStr) -> str:
        return _checked(
            "".join(str(part.value) if isinstance(part, ast.Constant)
                    else self._formatted(cast(ast.FormattedValue, part)) for part in node.values)
        )

    def _formatted(self, node: ast.FormattedValue) -> str:
        value = self.eval(node.value)
        spec = self._joined(node.format_spec) if isinstance(node.format_spec, ast.JoinedStr) else ""
        return _format_value(value, None if node.conversion == -1 else chr(node.conversion), spec)

    def eval(self, node: ast.AST) -> Any:
        """Evaluate one expression node (already validated)."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.namespace[node.id]
        if isinstance(node, ast.JoinedStr):
            return self._joined(node)
        if isinstance(node, ast.Subscript):
            return self.eval(node.value)[self.eval(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(None if part is None else self.eval(part) for part in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp):
            return _UNARYOPS[type(node.op)](self.eval(node.operand))
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for operand in node.values:
                result = self.eval(operand)
                if bool(result) is isinstance(node.op, ast.Or):
                    break
            return result
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.eval(comparator)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.eval(node.test) else node.orelse)
        if isinstance(node, ast.Tuple):
            return _printable(tuple(self.eval(element) for element in node.elts))
        if isinstance(node, ast.List):
            return _printable([self.eval(element) for element in node.elts])
        raise TemplateError(f"{type(node).__name__} is not allowed in templates")

    def _call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Attribute)
        receiver = self.eval(node.func.value)
        name = node.func.attr
        if name not in _METHODS.get(type(receiver), frozenset()):
            raise TemplateError(f"method .{name}() is not allowed on {type(receiver).__name__} values")
        args = [self.eval(arg) for arg in node.args]
        kwargs = {keyword.arg: self.eval(keyword.value) for keyword in node.keywords if keyword.arg}
        if isinstance(receiver, str) and name in _FORMAT_METHODS:
            return _format_string(receiver, name, args, kwargs)
        if isinstance(receiver, str):
            _guard_str_method(receiver, name, args)
        return _checked(getattr(receiver, name)(*args, **kwargs))

    def _binop(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(node.op, ast.Mod) and isinstance(left, str):
            raise TemplateError("%-formatting of strings is not allowed in templates (use a replacement field)")
        if isinstance(node.op, ast.Mult):
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    _check_len(_size(sequence) * count)  # by printed size: the copies share their items
        elif isinstance(node.op, ast.Add) and isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            _check_len(_size(left) + _size(right))
        return _checked(_BINOPS[type(node.op)](left, right))


def _format_value(value: Any, conversion: str | None, spec: str) -> str:
    """One replacement field, of an f-string or of a format string: conversion, spec check, format()."""
    _check_spec(spec)
    _check_len(_size(value))  # str(), repr() and format() of a container print every item it shares
    if conversion is not None:
        value = _CONVERSIONS[conversion](value)
    return _checked(format(value, spec))


def _check_spec(spec: str) -> None:
    """Refuse a format spec asking for more than MAX_VALUE_LEN characters (width or precision)."""
    limit = len(str(MAX_VALUE_LEN))
    for number in re.findall(r"\d+", spec):
        digits = number.lstrip("0")
        if len(digits) > limit or (digits and int(digits) > MAX_VALUE_LEN):
            raise TemplateError(f"format spec {_clip(spec)!r} asks for more than {MAX_VALUE_LEN} characters")


# A checked format string is a list of (literal text, field or None) pairs; a field is (key, conversion, spec)
# with key None for an automatic field, an int for a positional one and a str for a name.
_FormatField = tuple[int | str | None, str | None, str]


def _parse_format(fmt: str) -> list[tuple[str, _FormatField | None]]:
    """Parse a str.format() format string and check every field; nothing is formatted here."""
    import string

    try:
        pieces = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise TemplateError(f"invalid format string {_clip(fmt)!r}: {exc}") from None
    parsed: list[tuple[str, _FormatField | None]] = []
    for literal, name, spec_or_none, conversion in pieces:
        if name is None:
            parsed.append((literal, None))
            continue
        spec = spec_or_none or ""
        field = _clip("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
        # str.format splits a field name at its first '.' (attribute) or '[' (index): neither is allowed.
        cut = re.search(r"[.\[]", name)
        if cut:
            what = "attribute access" if cut.group() == "." else "indexing"
            raise TemplateError(f"format field {field!r} uses {what}, which templates do not allow")
        if "{" in spec or "}" in spec:
            raise TemplateError(
                f"format field {field!r} has a replacement field inside its format spec, which templates do not allow"
            )
        if conversion is not None and conversion not in _CONVERSIONS:
            raise TemplateError(f"format field {field!r} has unknown conversion '!{conversion}' (use !r, !s or !a)")
        _check_spec(spec)
        key: int | str | None = name or None
        if name.isdecimal():
            if len(name.lstrip("0")) > len(str(MAX_VALUE_LEN)):  # more arguments than a template can pass
                raise TemplateError(f"format field {field!r} has too many digits")
            key = int(name)
        parsed.append((literal, (key, conversion, spec)))
    return parsed


def _format_string(fmt: str, method: str, args: list[Any], kwargs: Mapping[str, Any]) -> str:
    """fmt.format(*args, **kwargs) or fmt.format_map(args[0]), for checked fields only, built under the cap.

    Lookups and their errors follow str.format: automatic and manual numbering do
    not mix, format_map() has no positional arguments, a missing name is a KeyError.
    """
    positional: list[Any] | None = args
    named: Mapping[Any, Any] = kwargs
    if method == "format_map":
        if len(args) != 1 or kwargs:
            raise TemplateError(f"format_map() takes exactly one argument, a dict ({len(args) + len(kwargs)} given)")
        if type(args[0]) is not dict:
            raise TemplateError(f"format_map() argument must be a plain dict, not {type(args[0]).__name__}")
        positional, named = None, args[0]
    parts: list[str] = []
    total = 0
    numbering, next_index = "", 0
    for literal, field in _parse_format(fmt):
        parts.append(literal)
        total += len(literal)
        if field is not None:
            key, conversion, spec = field
            if isinstance(key, str):
                value = named[key]
            else:
                if key is None:
                    if numbering == "manual":
                        raise ValueError("cannot switch from manual field specification to automatic field numbering")
                    numbering, key, next_index = "auto", next_index, next_index + 1
                elif numbering == "auto":
                    raise ValueError("cannot switch from automatic field numbering to manual field specification")
                else:
                    numbering = "manual"
                if positional is None:
                    raise ValueError("Format string contains positional fields")
                if key >= len(positional):
                    raise IndexError(f"Replacement index {key} out of range for positional args tuple")
                value = positional[key]
            text = _format_value(value, conversion, spec)
            parts.append(text)
            total += len(text)
        _check_len(total)
    return "".join(parts)


def _guard_str_method(text: str, name: str, args: list[Any]) -> None:
    """Refuse the str methods whose result can be far larger than their inputs, before they run."""
    if name == "zfill" and args and isinstance(args[0], int):
        _check_len(args[0])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_len(len(text) + text.count(args[0]) * (len(args[1]) - len(args[0])))
    elif name == "join" and args and isinstance(args[0], Collection):
        items = args[0]
        _check_len(len(text) * max(len(items) - 1, 0) + sum(len(item) for item in items if isinstance(item, str)))


def _check_len(length: int) -> None:
    if length > MAX_VALUE_LEN:
        raise TemplateError(f"result would be longer than {MAX_VALUE_LEN} characters or items")


def _checked(value: T) -> T:
    """Stop growth early: every intermediate string, list and tuple stays below the cap."""
    if isinstance(value, (str, list, tuple)):
        _check_len(len(value))
    return value


def _printable(value: T) -> T:
    """A container the template built (a display, a repetition): below the cap by its printed size too, so
    printing, hashing or comparing it stays bounded. Config data is bounded by the config's own checks."""
    _check_len(_size(value))
    return value


def _size(value: Any) -> int:
    """len(value) for a string; otherwise a lower bound of len(repr(value)), walked no further than
    past MAX_VALUE_LEN. Containers may share their items (`[['a' * 9999] * 9999] * 9999` holds three
    small lists), so their printed size is checked before anything prints, hashes or compares them."""
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    while stack and total <= MAX_VALUE_LEN:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2  # the quotes
        elif isinstance(item, bool) or item is None:
            total += 4
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 1  # about its digits, never above them
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)  # braces, ": " and ", "
            if total <= MAX_VALUE_LEN:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, Collection):  # list, tuple, set, dict views
            total += 2 + 2 * len(item)  # brackets and ", "
            if total <= MAX_VALUE_LEN:
                stack.extend(item)
        else:
            total += len(repr(item)) if isinstance(item, float) else 1
    return total


def _describe(exc: Exception) -> str:
    """`Type: message`, unless the message would print a value over the cap (a KeyError's key)."""
    if any(_size(arg) > MAX_VALUE_LEN for arg in exc.args):
        return f"{type(exc).__name__} (its message would be longer than {MAX_VALUE_LEN} characters)"
    return f"{type(exc).__name__}: {exc}"


def _snippet(node: ast.AST) -> str:
    return _clip(ast.unparse(node))


def _clip(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
