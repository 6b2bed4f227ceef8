"""Supervision: restarts, intensity, escalation, strategies, stash, ordered shutdown, no leaks."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pykka
import pytest
import trio

from actors.core._supervision import ChildSpec, Restart, Strategy, SupervisedActor, Supervisor
from actors.errors import ChildStartError, StashFull

WAIT_S = 5.0


class Recorder:
    """Thread-safe log of what happened, with a bounded wait for the next item."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.all: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def add(self, *item: Any) -> None:
        with self.lock:
            self.all.append(item)
        self.items.put(item)

    def next(self, kind: str) -> tuple[Any, ...]:
        deadline = time.monotonic() + WAIT_S
        while True:
            item = self.items.get(timeout=max(0.01, deadline - time.monotonic()))
            if item[0] == kind:
                return item


class Worker(SupervisedActor):
    def __init__(self, rec: Recorder, fail_start: threading.Event | None = None,
                 start_delay: float = 0.0, ignore_stop: threading.Event | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.rec = rec
        self.fail_start = fail_start
        self.start_delay = start_delay
        self.ignore_stop = ignore_stop
        self.count = 0

    def on_start(self) -> None:
        if self.start_delay:
            time.sleep(self.start_delay)
        if self.fail_start is not None and self.fail_start.is_set():
            self.fail_start.clear()
            raise RuntimeError("on_start failed")
        self.rec.add("start", self.child_id, self.incarnation)

    def on_stop(self) -> None:
        if self.ignore_stop is not None:
            self.ignore_stop.wait(WAIT_S)
        self.rec.add("stop", self.child_id)

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash requested")
        if message == "base":
            raise KeyboardInterrupt
        if message == "incr":
            self.count += 1
            return self.count
        if isinstance(message, tuple) and message[0] == "note":
            self.rec.add("note", self.child_id, message[1])
            return None
        if message == "task_fail":
            async def bad() -> None:
                await trio.sleep(0)
                raise ValueError("trio task broke")
            self.run_task(bad)
            return None
        return super().on_receive(message)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecSup(Supervisor):
    max_restarts = 2
    period_s = 10.0
    backoff_base_s = 0.001

    def __init__(self, rec: Recorder, strategy: Strategy = Strategy.ONE_FOR_ONE, **kw: Any) -> None:
        super().__init__(**kw)
        self.rec = rec
        self.strategy = strategy

    def on_child_event(self, event: str, child_id: str, **details: Any) -> None:
        self.rec.add(event, child_id, details)

    def on_escalation(self, child_id: str, reason: str) -> None:
        self.rec.add("escalated", child_id, reason)

    def set_clock(self, clock: Any) -> None:
        self._clock = clock

    def tell_child(self, child_id: str, message: Any) -> None:
        self.send_to_child(child_id, message)

    def ref_of(self, child_id: str) -> Any:
        return self.child_ref(child_id)


def spec(rec: Recorder, child_id: str, **kw: Any) -> ChildSpec:
    restart = kw.pop("restart", Restart.PERMANENT)
    timeout = kw.pop("shutdown_timeout_s", 5.0)
    return ChildSpec(child_id, Worker, {"rec": rec, **kw}, restart=restart, shutdown_timeout_s=timeout)


def start_sup(rec: Recorder, *specs: ChildSpec, **kw: Any) -> Any:
    ref = RecSup.start(rec, **kw)
    ref.proxy().start_children(list(specs)).get(timeout=WAIT_S)
    return ref


def child(sup: Any, child_id: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        ref = sup.proxy().ref_of(child_id).get(timeout=WAIT_S)
        if ref is not None and ref.is_alive():
            return ref
        time.sleep(0.005)
    raise AssertionError(f"child {child_id} not live")


def test_crashes_within_intensity_restart_with_fresh_state() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "w"))
    for attempt in (1, 2):
        ref = child(sup, "w")
        assert ref.ask("incr") == 1 and ref.ask("incr") == 2
        ref.tell("crash")
        restarted = rec.next("restarted")
        assert restarted[2]["attempt"] == attempt
        assert "crash requested" in restarted[2]["reason"]
    assert child(sup, "w").ask("incr") == 1  # fresh state in the new incarnation
    sup.stop()


def test_one_more_crash_within_period_escalates_and_takes_children_down() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "w"), spec(rec, "other"))
    for _ in range(2):
        child(sup, "w").tell("crash")
        rec.next("restarted")
    other = child(sup, "other")
    child(sup, "w").tell("crash")
    assert rec.next("escalated")[1] == "w"
    deadline = time.monotonic() + WAIT_S
    while (sup.is_alive() or other.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not sup.is_alive() and not other.is_alive()


def test_crashes_spread_wider_than_period_do_not_escalate() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "w"))
    clock = ManualClock()
    sup.proxy().set_clock(clock).get(timeout=WAIT_S)
    for _ in range(6):
        clock.now += 11.0  # each crash outside the previous ones' 10 s window
        child(sup, "w").tell("crash")
        assert rec.next("restarted")[2]["attempt"] == 1
    assert sup.is_alive()
    sup.stop()


def test_on_start_failure_is_reported_and_restarted() -> None:
    rec = Recorder()
    fail = threading.Event()
    sup = start_sup(rec, spec(rec, "w", fail_start=fail))
    fail.set()
    child(sup, "w").tell("crash")  # the next incarnation fails in on_start, the one after succeeds
    restarted = rec.next("restarted")  # the failed incarnation counted as attempt 1, this one is attempt 2
    assert restarted[2]["attempt"] == 2
    assert "on_start failed" in restarted[2]["reason"]
    assert child(sup, "w").ask("incr") == 1
    sup.stop()


def test_initial_start_failure_raises_and_leaves_nothing() -> None:
    rec = Recorder()
    fail = threading.Event()
    fail.set()
    sup = RecSup.start(rec)
    with pytest.raises(ChildStartError, match="on_start failed"):
        sup.proxy().start_children([spec(rec, "ok"), spec(rec, "bad", fail_start=fail)]).get(timeout=WAIT_S)
    assert sup.proxy().children().get(timeout=WAIT_S) == []
    sup.stop()


def test_shutdown_is_reverse_start_order() -> None:
    rec = Recorder()
    sup = start_sup(rec, *(spec(rec, f"c{i}") for i in range(4)))
    sup.stop()
    assert [i[1] for i in rec.all if i[0] == "stop"] == ["c3", "c2", "c1", "c0"]


def test_child_that_ignores_stop_is_abandoned_at_its_timeout() -> None:
    rec = Recorder()
    release = threading.Event()
    sup = start_sup(rec, spec(rec, "stuck", ignore_stop=release, shutdown_timeout_s=0.3), spec(rec, "fine"))
    t0 = time.monotonic()
    sup.stop()
    elapsed = time.monotonic() - t0
    stopped = {i[1]: i[2] for i in rec.all if i[0] == "stopped"}
    assert stopped["stuck"]["abandoned"] is True
    assert stopped["fine"]["abandoned"] is False
    assert 0.2 <= elapsed <= 0.45, elapsed
    release.set()  # let the abandoned thread finish so the leak check passes


def test_children_start_in_parallel() -> None:
    rec = Recorder()
    t0 = time.monotonic()
    sup = start_sup(rec, *(spec(rec, f"slow{i}", start_delay=1.0) for i in range(4)))
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, elapsed
    sup.stop()


def test_base_exception_in_handler_fails_only_that_actor() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "w"), spec(rec, "bystander"))
    bystander = child(sup, "bystander")
    child(sup, "w").tell("base")
    assert "KeyboardInterrupt" in rec.next("restarted")[2]["reason"]
    assert bystander.is_alive() and sup.is_alive()
    sup.stop()


def test_trio_task_failure_reaches_the_supervisor() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "w"))
    child(sup, "w").tell("task_fail")
    assert "trio task broke" in rec.next("restarted")[2]["reason"]
    sup.stop()


def test_messages_to_a_restarting_child_are_stashed_then_delivered() -> None:
    rec = Recorder()
    sup = RecSup.start(rec)
    sup.proxy().start_children([spec(rec, "w")]).get(timeout=WAIT_S)
    proxy = sup.proxy()
    # crash and immediately send: the supervisor processes the exit before the notes, so they are stashed
    child(sup, "w").ask("incr")
    child(sup, "w").tell("crash")
    rec.next("restarted")
    for i in range(3):
        proxy.tell_child("w", ("note", i)).get(timeout=WAIT_S)
    notes = [rec.next("note")[2] for _ in range(3)]
    assert notes == [0, 1, 2]
    sup.stop()


def test_stash_is_bounded() -> None:
    rec = Recorder()

    class TinyStash(RecSup):
        stash_limit = 2
        backoff_base_s = 5.0  # keep the child down while we send

    sup = TinyStash.start(rec)
    sup.proxy().start_children([spec(rec, "w")]).get(timeout=WAIT_S)
    child(sup, "w").tell("crash")
    deadline = time.monotonic() + WAIT_S
    while sup.proxy().ref_of("w").get(timeout=WAIT_S) is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    sup.proxy().tell_child("w", ("note", 1)).get(timeout=WAIT_S)
    sup.proxy().tell_child("w", ("note", 2)).get(timeout=WAIT_S)
    with pytest.raises(StashFull):
        sup.proxy().tell_child("w", ("note", 3)).get(timeout=WAIT_S)
    sup.stop()


def test_rest_for_one_restarts_the_later_children_too() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "a"), spec(rec, "b"), spec(rec, "c"), strategy=Strategy.REST_FOR_ONE)
    a_ref = child(sup, "a")
    child(sup, "b").tell("crash")
    restarted = {rec.next("restarted")[1], rec.next("restarted")[1]}
    assert restarted == {"b", "c"}
    assert child(sup, "a") is a_ref or child(sup, "a") == a_ref
    sup.stop()


def test_transient_and_temporary_children() -> None:
    rec = Recorder()
    sup = start_sup(rec, spec(rec, "t", restart=Restart.TRANSIENT), spec(rec, "tmp", restart=Restart.TEMPORARY))
    child(sup, "t").stop()  # a normal exit of a transient child: not restarted
    assert rec.next("stopped")[1] == "t"
    child(sup, "tmp").tell("crash")  # a temporary child is never restarted
    assert rec.next("stopped")[1] == "tmp"
    assert sup.proxy().children().get(timeout=WAIT_S) == []
    sup.stop()


def test_no_actor_survives() -> None:
    assert pykka.ActorRegistry.get_all() == []
