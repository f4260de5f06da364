"""background.Background: results collected, errors raised, and a result given up closed whenever it comes."""

from __future__ import annotations

import threading

import pytest

from remote_http_launcher.background import Background


def test_the_result_or_the_error_is_handed_over() -> None:
    assert Background(lambda: 42).result() == 42

    def fail() -> int:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError, match="refused"):
        Background(fail).result()


def test_a_call_still_running_times_out_and_a_result_given_up_meanwhile_is_closed_when_it_comes() -> None:
    release, closed = threading.Event(), list[str]()

    def open_connection() -> str:
        release.wait()
        return "connection"

    running = Background(open_connection, closed.append)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.05 s"):
        running.result(0.05)
    running.abandon()
    assert closed == []  # not returned yet
    release.set()
    running.wait()
    assert closed == ["connection"]


def test_a_result_given_up_after_it_came_is_closed_at_once_and_only_once() -> None:
    closed: list[str] = []
    done = Background(lambda: "channel", closed.append)
    done.wait()
    done.abandon()
    done.abandon()
    assert closed == ["channel"]
