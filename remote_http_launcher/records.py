"""`NamedTuple`, `Generic`, `cache` and two `types` for the warm path, without `typing`, `functools` or `types`.

Importing `typing` costs about as many instructions as starting the interpreter,
and `functools` brings `collections` (whose `namedtuple` also compiles code for
each record): together a quarter of an interpreter's start, for the class syntax
of a handful of records and a few memoised functions. Type checkers see
`typing.NamedTuple`, `typing.Generic` and `functools.cache` themselves; at run
time a record is a tuple subclass with what a namedtuple has (fields and defaults
from the annotations, in order; `_fields`, `_field_defaults`, `_make`, `_replace`,
`_asdict`, its repr and pickling; docstring and methods kept; tests/test_records.py
compares the two). Modules on the warm path also spell `TYPE_CHECKING = False`
themselves (type checkers take the name as true) and import `collections.abc`
names only for type checkers.
A class generic only for type checkers derives from `Generic[T]`, with `T` made by
`TypeVar` under `TYPE_CHECKING`: at run time `Generic[...]` is a plain base and
annotations stay strings.
"""

from __future__ import annotations

import sys
from _operator import itemgetter  # operator's C half, built into the interpreter

__all__ = ["Generic", "MappingProxy", "NamedTuple", "SimpleNamespace", "cache"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from functools import cache
    from types import MappingProxyType as MappingProxy
    from types import SimpleNamespace
    from typing import Generic, NamedTuple
else:
    # As types.py itself finds them (importing it for two names costs a warm run a few hundred microseconds).
    MappingProxy = type(type.__dict__)
    SimpleNamespace = type(sys.implementation)

    def cache(function):
        """`functools.cache` for functions of positional, hashable arguments (with its `cache_clear`)."""
        results = {}

        def cached(*args):
            try:
                return results[args]
            except KeyError:
                result = results[args] = function(*args)
                return result

        cached.__name__, cached.__qualname__, cached.__doc__ = function.__name__, function.__qualname__, \
            function.__doc__
        cached.__module__, cached.__wrapped__, cached.cache_clear = function.__module__, function, results.clear
        return cached

    class Generic:
        """`class Box(Generic[T])`: subscripting gives the class itself, a base with nothing in it."""

        def __class_getitem__(cls, params: object) -> type:
            return cls

    class _Record(tuple):
        """What every record has: a namedtuple's constructor and methods, reading the class's fields."""

        __slots__ = ()
        _fields = ()  # not annotated: typing.get_type_hints of a record names its fields only
        _field_defaults = MappingProxy({})

        def __new__(cls, *args, **kwargs):
            """As the namedtuple's generated `__new__`, with the same errors."""
            fields, defaults = cls._fields, cls._field_defaults
            if len(args) > len(fields):
                required = len(fields) - len(defaults)
                takes = f"from {required + 1} to {len(fields) + 1}" if defaults else f"{len(fields) + 1}"
                raise TypeError(f"{cls.__name__}.__new__() takes {takes} positional arguments but "
                                f"{len(args) + 1} were given")
            if not kwargs and len(args) == len(fields):
                return tuple.__new__(cls, args)
            for name in kwargs:
                if name not in fields:
                    raise TypeError(f"{cls.__name__}.__new__() got an unexpected keyword argument '{name}'")
                if fields.index(name) < len(args):
                    raise TypeError(f"{cls.__name__}.__new__() got multiple values for argument '{name}'")
            rest = fields[len(args):]
            missing = [f"'{field}'" for field in rest if field not in kwargs and field not in defaults]
            if missing:
                names = missing[0] if len(missing) == 1 else \
                    f"{', '.join(missing[:-1])}{',' if len(missing) > 2 else ''} and {missing[-1]}"
                raise TypeError(f"{cls.__name__}.__new__() missing {len(missing)} required positional "
                                f"argument{'s' if len(missing) > 1 else ''}: {names}")
            return tuple.__new__(cls, (*args, *(kwargs[field] if field in kwargs else defaults[field]
                                                for field in rest)))

        @classmethod
        def _make(cls, iterable):
            result = tuple.__new__(cls, iterable)
            if len(result) != len(cls._fields):
                raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(result)}")
            return result

        def _replace(self, **changes):
            result = self._make(map(changes.pop, self._fields, self))
            if changes:
                raise ValueError(f"Got unexpected field names: {list(changes)!r}")
            return result

        def _asdict(self):
            return dict(zip(self._fields, self, strict=True))

        def __repr__(self):
            return f"{self.__class__.__name__}(" + ", ".join(
                f"{field}={value!r}" for field, value in zip(self._fields, self, strict=True)) + ")"

        def __getnewargs__(self):
            return tuple(self)

    _NAMEDTUPLE_OWN = frozenset({"__module__", "__qualname__", "__annotations__"})

    class _RecordType(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            annotations = namespace.get("__annotations__", {})
            fields = tuple(annotations)
            defaulted = [field for field in fields if field in namespace]
            if defaulted != list(fields[len(fields) - len(defaulted):]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            own = {"__slots__": (), "_fields": fields, "__match_args__": fields, "__annotations__": annotations,
                   "_field_defaults": {field: namespace[field] for field in defaulted},
                   "__module__": namespace["__module__"], "__qualname__": namespace.get("__qualname__", name),
                   "__doc__": f"{name}({', '.join(fields)})"}
            for index, field in enumerate(fields):
                own[field] = property(itemgetter(index), doc=f"Alias for field number {index}")
            for attribute, value in namespace.items():
                if attribute not in _NAMEDTUPLE_OWN and attribute not in fields:
                    own[attribute] = value
            return type(name, (_Record,), own)

    class NamedTuple(metaclass=_RecordType):
        """Base class of a record: `class Point(NamedTuple): x: int; y: int = 0`."""
