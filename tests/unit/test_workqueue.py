"""The work queue between watch events and passes (runtime/workqueue.py), and the handlers that feed it."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from peakserve.decide import CHILD, DRIFT, SPEC, WAKE
from peakserve.runtime import handlers
from peakserve.runtime.runtime import stronger
from peakserve.runtime.workqueue import FIRST, REFRESH, WorkQueue


class Recorder:
    """process() for a queue: records (key, cause), can hold the first call until released, can fail."""

    def __init__(self, fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, str]] = []
        self.times: list[float] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = dict(fail or {})
        self.active: set[str] = set()
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, key: str, cause: str) -> None:
        with self.lock:
            if key in self.active:
                self.overlaps += 1
            self.active.add(key)
        self.entered.set()
        self.gate.wait(5)
        with self.lock:
            self.calls.append((key, cause))
            self.times.append(time.monotonic())
            self.active.discard(key)
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise RuntimeError(f"{key} failed")


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def queue(process, workers: int = 1, **kwargs) -> WorkQueue:
    return WorkQueue(process, workers=workers, stronger=stronger, **kwargs)


def test_stronger_cause_wins_a_merge():
    assert stronger(CHILD, SPEC) == SPEC and stronger(SPEC, CHILD) == SPEC
    assert stronger(CHILD, DRIFT) == DRIFT and stronger(WAKE, CHILD) == WAKE
    assert stronger(DRIFT, SPEC) == SPEC


def test_events_for_a_waiting_key_merge_into_one_pass():
    rec = Recorder()
    q = queue(rec)
    q.add("ns/blocker", SPEC)  # holds the only worker
    rec.entered.wait(5)
    for cause in (CHILD, CHILD, SPEC, CHILD, DRIFT):
        q.add("ns/a", cause)
    assert q.depth() == 1
    rec.gate.set()
    wait_for(lambda: len(rec.calls) == 2)
    time.sleep(0.05)
    assert rec.calls == [("ns/blocker", SPEC), ("ns/a", SPEC)]
    q.stop(1)


def test_refresh_goes_before_first_and_fifo_within_a_priority():
    rec = Recorder()
    q = queue(rec)
    q.add("ns/blocker", SPEC)
    rec.entered.wait(5)
    q.add("ns/create-1", SPEC, FIRST)
    q.add("ns/create-2", SPEC, FIRST)
    q.add("ns/child-1", CHILD, REFRESH)
    q.add("ns/create-3", SPEC, FIRST)
    q.add("ns/child-2", CHILD, REFRESH)
    q.add("ns/create-1", CHILD, REFRESH)  # a waiting first pass raised: it moves ahead, once
    rec.gate.set()
    wait_for(lambda: len(rec.calls) == 6)
    time.sleep(0.05)
    assert [k for k, _ in rec.calls] == ["ns/blocker", "ns/child-1", "ns/child-2", "ns/create-1",
                                         "ns/create-2", "ns/create-3"]
    assert dict(rec.calls)["ns/create-1"] == SPEC  # merged: the create's cause kept
    q.stop(1)


def test_an_event_during_a_pass_runs_the_key_once_more_never_at_the_same_time():
    rec = Recorder()
    q = queue(rec, workers=4)
    q.add("ns/a", SPEC)
    rec.entered.wait(5)
    for _ in range(10):
        q.add("ns/a", CHILD, REFRESH)
    rec.gate.set()
    wait_for(lambda: len(rec.calls) == 2)
    time.sleep(0.05)
    assert rec.calls == [("ns/a", SPEC), ("ns/a", CHILD)]
    assert rec.overlaps == 0
    q.stop(1)


def test_many_keys_many_workers_one_pass_at_a_time_per_key():
    rec = Recorder()
    rec.gate.set()
    q = queue(rec, workers=8)
    for i in range(2000):
        q.add(f"ns/{i % 50}", CHILD if i % 3 else SPEC, i % 2)
    wait_for(lambda: q.depth() == 0 and not q._active)
    assert rec.overlaps == 0
    assert {k for k, _ in rec.calls} == {f"ns/{i}" for i in range(50)}
    q.stop(1)


def test_memory_is_one_entry_per_key_whatever_the_event_rate():
    rec = Recorder()
    q = queue(rec)
    q.add("ns/blocker", SPEC)
    rec.entered.wait(5)
    for i in range(20000):
        q.add(f"ns/{i % 100}", CHILD, REFRESH if i % 7 == 0 else FIRST)
    assert q.depth() == 100
    # A key raised from first to refresh leaves one stale slot behind, once: at most two slots per key.
    assert sum(len(d) for d in q._ready) <= 200
    rec.gate.set()
    q.stop(1)


def test_a_failed_pass_is_retried_with_backoff_and_a_success_resets_it():
    rec = Recorder(fail={"ns/a": 2})
    rec.gate.set()
    q = queue(rec, backoff=0.05)
    q.add("ns/a", SPEC)
    wait_for(lambda: len(rec.calls) == 3)
    gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05 s, then doubled
    assert rec.calls == [("ns/a", SPEC)] * 3   # the cause is kept for the retry
    assert "ns/a" not in q._failures
    time.sleep(0.2)
    assert len(rec.calls) == 3  # no retry after the success
    q.stop(1)


def test_no_retry_when_the_policy_says_so():
    rec = Recorder(fail={"ns/gone": 1})
    rec.gate.set()
    q = queue(rec, backoff=0.01, retry=lambda err: False)
    q.add("ns/gone", SPEC)
    wait_for(lambda: len(rec.calls) == 1)
    time.sleep(0.1)
    assert len(rec.calls) == 1
    q.stop(1)


def test_a_wake_up_runs_once_at_its_time_replaced_or_cancelled():
    rec = Recorder()
    rec.gate.set()
    q = queue(rec)
    t0 = time.monotonic()
    q.add_after("ns/a", WAKE, 0.3)
    q.add_after("ns/a", WAKE, 0.1)      # replaces the first: runs at 0.1 s, and only once
    q.add_after("ns/b", WAKE, 0.1)
    q.cancel("ns/b")
    q.add_after("ns/c", WAKE, 0.15)
    q.forget("ns/c")                    # gone: no wake-up
    wait_for(lambda: len(rec.calls) == 1)
    assert 0.08 <= rec.times[0] - t0 < 0.3
    time.sleep(0.4)
    assert rec.calls == [("ns/a", WAKE)]
    q.stop(1)


def test_a_burst_of_child_events_settles_into_one_pass_never_pushed_back():
    rec = Recorder()
    rec.gate.set()
    q = queue(rec)
    t0 = time.monotonic()
    q.add("ns/a", CHILD, REFRESH, settle=0.2)
    time.sleep(0.1)
    q.add("ns/a", CHILD, REFRESH, settle=0.2)  # within the window: merges, and does not move it later
    q.add("ns/a", DRIFT, FIRST, settle=0.2)
    wait_for(lambda: len(rec.calls) == 1)
    assert 0.18 <= rec.times[0] - t0 < 0.3
    assert rec.calls == [("ns/a", DRIFT)]
    time.sleep(0.3)
    assert len(rec.calls) == 1
    q.stop(1)


def test_a_settling_event_for_a_waiting_key_merges_at_once():
    rec = Recorder()
    q = queue(rec)
    q.add("ns/blocker", SPEC)
    rec.entered.wait(5)
    q.add("ns/a", SPEC, FIRST)
    q.add("ns/a", CHILD, REFRESH, settle=5)  # waiting already: no delayed pass of its own
    assert not q._delayed
    rec.gate.set()
    wait_for(lambda: len(rec.calls) == 2)
    assert rec.calls[1] == ("ns/a", SPEC)
    q.stop(1)


def test_no_worker_thread_before_the_first_add():
    q = queue(Recorder(), workers=3)
    assert q._threads == []
    q.add_after("ns/a", WAKE, 60)
    assert len(q._threads) == 3
    q.stop(1)


# ---- the handlers: which event queues what ---------------------------------------------------------

class FakeRuntime:
    def __init__(self, known: set[str] = frozenset()):
        self.submitted: list[tuple[str, str, str, int]] = []
        self.forgotten: list[str] = []
        self._known = set(known)
        self.bodies: dict[str, dict] = {}

    def submit(self, namespace, name, cause, priority=FIRST):
        self.submitted.append((namespace, name, cause, priority))

    def known(self, namespace, name):
        return f"{namespace}/{name}" in self._known

    def saw(self, namespace, name, body):
        self.bodies[f"{namespace}/{name}"] = body

    def forget(self, namespace, name):
        self.forgotten.append(name)


def md_event(runtime, type_, generation=1, observed=None, name="m"):
    body = {"metadata": {"name": name, "namespace": "ns", "generation": generation},
            "status": {} if observed is None else {"observedGeneration": observed}}
    asyncio.run(handlers.model_deployment_changed(body=body, name=name, namespace="ns", type=type_,
                                                  memo=SimpleNamespace(runtime=runtime)))
    return runtime.submitted


@pytest.mark.parametrize("type_, generation, observed, known, expected", [
    ("ADDED", 1, None, False, [("ns", "m", SPEC, FIRST)]),            # created
    (None, 3, 3, False, [("ns", "m", SPEC, FIRST)]),                  # found at start: resume
    (None, 3, 3, True, []),                                           # a re-listing of the watch
    (None, 4, 3, True, [("ns", "m", SPEC, REFRESH)]),                 # ... that shows a new spec
    ("MODIFIED", 2, 1, True, [("ns", "m", SPEC, REFRESH)]),           # spec changed
    ("MODIFIED", 2, 2, True, []),                                     # our own status patch
])
def test_model_deployment_events(type_, generation, observed, known, expected):
    runtime = FakeRuntime({"ns/m"} if known else set())
    assert md_event(runtime, type_, generation, observed) == expected
    assert runtime.bodies["ns/m"]["metadata"]["generation"] == generation  # every event's body is kept


def test_a_deleted_model_deployment_is_forgotten():
    runtime = FakeRuntime({"ns/m"})
    assert md_event(runtime, "DELETED") == [] and runtime.forgotten == ["m"]


def test_child_events_queue_a_refresh_of_their_owner():
    runtime = FakeRuntime()
    memo = SimpleNamespace(runtime=runtime)
    owned = {"metadata": {"annotations": {handlers.ANNOTATION_MD: "m"}}, "status": {"observedGeneration": 1}}
    for type_ in (None, "ADDED", "MODIFIED"):
        asyncio.run(handlers.child_changed(body=owned, namespace="ns", type=type_, memo=memo))
    asyncio.run(handlers.child_changed(body={"metadata": {}}, namespace="ns", type="MODIFIED", memo=memo))
    assert runtime.submitted == [("ns", "m", CHILD, REFRESH)] * 2


@pytest.mark.parametrize("status,queued", [
    (None, False),                                   # a Deployment or Job just created: no controller has reported
    ({"phase": "Pending", "qosClass": "Burstable"}, False),  # a pod as the API server creates it
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}, True),
    ({"observedGeneration": 1, "replicas": 1}, True),
])
def test_a_child_added_before_any_report_queues_nothing(status, queued):
    runtime = FakeRuntime()
    body = {"metadata": {"annotations": {handlers.ANNOTATION_MD: "m"}}, **({"status": status} if status else {})}
    asyncio.run(handlers.child_changed(body=body, namespace="ns", type="ADDED", memo=SimpleNamespace(runtime=runtime)))
    assert bool(runtime.submitted) is queued


def test_replaced_wake_ups_do_not_pile_up_in_the_heap():
    """Every pass sets its object's wake-up again, often a day ahead: the stale heap entries stay bounded."""
    q = queue(Recorder())
    for i in range(10000):
        q.add_after(f"ns/{i % 10}", WAKE, 86400 + i)
    assert len(q._delayed) == 10
    assert len(q._heap) <= 2 * 10 + 64 + 1
    q.stop(1)
