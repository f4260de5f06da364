"""`NamedTuple` for the warm path's records, and `Generic`, without importing `typing`.

Importing `typing` costs about as many instructions as starting the interpreter, a sixth of a warm
run, for the class syntax of a handful of records. Type checkers see `typing.NamedTuple` itself; at
run time the class statement builds the same `collections.namedtuple` that `typing` would (fields
and defaults from the annotations, in order; docstring and methods kept), so a record is a tuple
with `_replace`, `_fields` and `_field_defaults` either way. Modules on the warm path also spell
`TYPE_CHECKING = False` themselves for the same reason (type checkers take the name as true).
A class generic only for type checkers derives from `Generic[T]`, with `T` made by `TypeVar` under
`TYPE_CHECKING`: at run time `Generic[...]` is a plain base and annotations stay strings.
"""

from __future__ import annotations

import collections

__all__ = ["Generic", "NamedTuple"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, NamedTuple
else:
    class Generic:
        """`class Box(Generic[T])`: subscripting gives the class itself, a base with nothing in it."""

        def __class_getitem__(cls, params: object) -> type:
            return cls

    _NAMEDTUPLE_OWN = frozenset({"__module__", "__annotations__"})

    class _RecordType(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            annotations = namespace.get("__annotations__", {})
            fields = list(annotations)
            defaulted = [field for field in fields if field in namespace]
            if defaulted != fields[len(fields) - len(defaulted):]:
                raise TypeError(f"{name}: a field without a default follows one with a default")
            record = collections.namedtuple(name, fields, defaults=[namespace[field] for field in defaulted],
                                            module=namespace["__module__"])
            record.__annotations__ = annotations
            for attribute, value in namespace.items():
                if attribute not in _NAMEDTUPLE_OWN and attribute not in fields:
                    setattr(record, attribute, value)
            return record

    class NamedTuple(metaclass=_RecordType):
        """Base class of a record: `class Point(NamedTuple): x: int; y: int = 0`."""
