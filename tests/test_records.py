"""records.NamedTuple builds what typing.NamedTuple builds, without importing typing."""

from __future__ import annotations

import pickle
import subprocess
import sys
import typing

import pytest

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


def test_a_field_without_default_after_one_with_default_is_refused_as_typing_does() -> None:
    with pytest.raises(TypeError):
        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]  # refused by type checkers too


def test_records_do_not_import_typing() -> None:
    probe = "import sys, remote_http_launcher.records, remote_http_launcher.config; print('typing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
