"""Tests for the shared trio loop and task scopes."""

from __future__ import annotations

import threading

import pytest
import trio

from actors.core._trio_host import TaskCancelled, get_host


def test_submit_returns_result_and_errors_stay_in_the_future() -> None:
    host = get_host()

    async def ok(x: int) -> int:
        await trio.sleep(0)
        return x * 2

    async def boom() -> None:
        raise ValueError("boom")

    assert host.submit(ok, 21).result(5) == 42
    with pytest.raises(ValueError, match="boom"):
        host.submit(boom).result(5)
    # the loop survived the failing task
    assert host.call(ok, 1, timeout=5) == 2


def test_scope_close_cancels_and_waits() -> None:
    host = get_host()
    scope = host.open_scope("t")
    entered = threading.Event()
    exited = threading.Event()

    async def forever() -> None:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            exited.set()

    fut = scope.submit(forever)
    assert entered.wait(5)
    assert scope.close(5)
    assert exited.is_set()
    with pytest.raises(TaskCancelled):
        fut.result(5)
    with pytest.raises(TaskCancelled):
        scope.submit(forever).result(5)


def test_call_from_loop_thread_is_refused() -> None:
    host = get_host()

    async def inner() -> str:
        try:
            host.call(trio.sleep, 0)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "deadlock" in host.call(inner, timeout=5)


def test_a_cancelled_nursery_inside_a_task_is_a_cancellation() -> None:
    host = get_host()
    scope = host.open_scope("nursery")
    entered = threading.Event()

    async def with_nursery() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
            entered.set()

    fut = scope.submit(with_nursery)
    assert entered.wait(5)
    assert scope.close(5)
    with pytest.raises(TaskCancelled):
        fut.result(5)


def test_an_exception_group_with_one_error_reports_that_error() -> None:
    host = get_host()

    async def failing_child() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise KeyError("inner")

    with pytest.raises(KeyError, match="inner"):
        host.submit(failing_child).result(5)


def test_concurrent_first_use_waits_for_the_loop() -> None:
    from actors.core._trio_host import TrioHost

    host = TrioHost()  # a fresh host: several threads race to start it, none may see it half started
    tokens: list[object] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            host.start()
            tokens.append(host.token)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    host.stop()
    assert not errors and len(tokens) == 8 and len({id(t) for t in tokens}) == 1
