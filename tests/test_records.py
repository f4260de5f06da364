"""records.NamedTuple builds what typing.NamedTuple builds, without importing typing."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import pytest

from remote_http_launcher import records
from remote_http_launcher.records import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = "origin"

    def norm(self) -> int:
        return abs(self.x) + abs(self.y)

    @classmethod
    def parse(cls, text: str) -> Point:
        x, y = text.split(",")
        return cls(int(x), int(y))


class TypingPoint(typing.NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = "origin"


def test_a_record_is_the_namedtuple_typing_would_build() -> None:
    point = Point(3, -4)
    twin = TypingPoint(3, -4)
    assert isinstance(point, tuple) and tuple(point) == tuple(twin) == (3, -4, "origin")
    assert Point._fields == TypingPoint._fields and Point._field_defaults == TypingPoint._field_defaults
    assert typing.get_type_hints(Point) == typing.get_type_hints(TypingPoint) == {"x": int, "y": int, "label": str}
    assert repr(point) == repr(twin).replace("TypingPoint", "Point")
    assert Point.__doc__ == "A point." and Point.__module__ == __name__ and Point.__qualname__ == "Point"
    assert point._replace(label="p") == (3, -4, "p") and point.norm() == 7 and Point.parse("1,2") == (1, 2, "origin")
    assert pickle.loads(pickle.dumps(point)) == point


class Four(NamedTuple):
    x: int
    y: int
    z: int
    w: int = 0


class TypingFour(typing.NamedTuple):
    x: int
    y: int
    z: int
    w: int = 0


CALLS: list[tuple[str, Callable[[type[Any]], Any]]] = [
    ("all", lambda cls: cls(1, 2, 3, 4)), ("default", lambda cls: cls(1, 2, 3)),
    ("keywords", lambda cls: cls(z=3, y=2, x=1)), ("mixed", lambda cls: cls(1, 2, w=4, z=3)),
    ("none", lambda cls: cls()), ("two missing", lambda cls: cls(1)), ("one missing", lambda cls: cls(1, 2)),
    ("too many", lambda cls: cls(1, 2, 3, 4, 5)), ("twice", lambda cls: cls(1, x=2)),
    ("unknown", lambda cls: cls(1, 2, 3, q=2)), ("unknown first", lambda cls: cls(q=1)),
    ("replace", lambda cls: cls(1, 2, 3)._replace(w=9, x=0)),
    ("replace unknown", lambda cls: cls(1, 2, 3)._replace(q=1)),
    ("make", lambda cls: cls._make(iter([1, 2, 3, 4]))), ("make short", lambda cls: cls._make([1])),
    ("asdict", lambda cls: cls(1, 2, 3)._asdict()), ("repr", lambda cls: repr(cls(1, "2", [3]))),
    ("match args", lambda cls: cls.__match_args__), ("hash", lambda cls: hash(cls(1, 2, 3)) == hash((1, 2, 3, 0))),
    ("field", lambda cls: (cls(1, 2, 3).z, cls.z.__doc__)), ("doc", lambda cls: cls.__doc__),
    ("copy", lambda cls: pickle.loads(pickle.dumps(cls(1, 2, 3), protocol=2))),
]


@pytest.mark.parametrize(("case", "call"), CALLS, ids=[case for case, _ in CALLS])
def test_a_record_answers_as_typings_namedtuple_does(case: str, call: Callable[[type[Any]], Any]) -> None:
    """Each call, and each error, as typing.NamedTuple's class gives it (its name aside)."""
    def outcome(cls: type[Any]) -> Any:
        try:
            result = call(cls)
        except (TypeError, ValueError) as exc:
            return type(exc), str(exc).replace(cls.__name__, "NAME")
        return (type(result).__name__.replace(cls.__name__, "NAME"),
                result.replace(cls.__name__, "NAME") if isinstance(result, str) else result)

    assert outcome(Four) == outcome(TypingFour)


def test_a_field_without_default_after_one_with_default_is_refused_as_typing_does() -> None:
    with pytest.raises(TypeError):
        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]  # refused by type checkers too


def test_records_do_not_import_typing() -> None:
    probe = "import sys, remote_http_launcher.records, remote_http_launcher.config; print('typing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_the_namespace_types_are_the_types_modules() -> None:
    assert records.SimpleNamespace is types.SimpleNamespace and records.MappingProxy is types.MappingProxyType


def test_cache_calls_once_per_arguments_until_cleared() -> None:
    calls: list[tuple[int, ...]] = []

    @records.cache
    def twice(*numbers: int) -> list[int]:
        """Doubled."""
        calls.append(numbers)
        return [2 * number for number in numbers]

    first = twice(1, 2)
    assert twice(1, 2) is first and twice(3) == [6] and calls == [(1, 2), (3,)]
    assert twice.__name__ == "twice" and twice.__doc__ == "Doubled." and twice.__wrapped__(4) == [8]
    twice.cache_clear()
    assert twice(1, 2) == first and twice(1, 2) is not first and calls == [(1, 2), (3,), (4,), (1, 2)]
