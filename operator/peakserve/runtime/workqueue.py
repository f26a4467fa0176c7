"""The work queue between watch events and reconcile passes, the way controller-runtime has one.

kopf's handlers add a key here and return at once; a fixed pool of worker threads takes keys out and runs one
pass each. What the queue holds is one small entry per object, never a body, so its memory is bounded by the
number of objects whatever the rate of events, and the number of passes in flight by the number of workers.

- **De-duplication.** An event for a key that is already waiting merges into its entry: the stronger cause
  (see `stronger`) and the more urgent priority win. A burst of child events costs one pass, not one each.
- **One pass per key at a time.** An event for a key being processed marks it dirty; it is queued again
  (once, merged) when that pass ends, so nothing seen after the pass read the cluster is lost.
- **Priority.** `REFRESH` (child events, wake-ups, spec updates of known objects) goes before `FIRST`
  (creates, the resume listing, drift checks), so status follows the children during a burst of creates.
  Within a priority, first in, first out.
- **Delayed adds.** Retries after a failed pass (per key, exponential backoff, reset by a pass that
  succeeds) and wake-ups (the moment a promotion floor or a rollout step changes) wait in one heap that the
  workers watch: no thread per timer. Each key has at most one pending delayed add per slot ("wake",
  "retry"); a new one replaces the old.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable, Hashable

from . import metrics

log = logging.getLogger("peakserve.workqueue")

REFRESH, FIRST = 0, 1  # lower goes first
PRIORITY_NAMES = ("refresh", "first")

WAKE_SLOT, RETRY_SLOT, SETTLE_SLOT = "wake", "retry", "settle"

Key = Hashable
# (key, cause) -> None; raises to ask for a retry
Process = Callable[[Key, str], None]


@dataclasses.dataclass
class _Entry:
    cause: str
    priority: int
    seq: int              # matches the (seq, key) pushed on its deque; an older pair is stale
    since: float          # when the key first started waiting (for the wait-time histogram)


@dataclasses.dataclass
class _Delayed:
    seq: int
    cause: str
    priority: int


class WorkQueue:
    """Keys waiting for a pass, the keys in progress, and delayed adds; `workers` threads run `process`.

    `stronger(a, b)` is the cause to keep when two are merged; `retry(err)` says whether a failed pass is
    tried again (after `backoff` seconds, doubled per consecutive failure of that key, at most `max_backoff`).
    """

    def __init__(self, process: Process, *, workers: int, stronger: Callable[[str, str], str],
                 retry: Callable[[BaseException], bool] = lambda err: True,
                 backoff: float = 1.0, max_backoff: float = 60.0, name: str = "reconcile",
                 clock: Callable[[], float] = time.monotonic):
        self.process, self.workers, self.stronger, self.retry = process, workers, stronger, retry
        self.backoff, self.max_backoff, self.name, self.clock = backoff, max_backoff, name, clock
        self._cond = threading.Condition()
        self._ready: tuple[deque, ...] = (deque(), deque())  # per priority: (seq, key)
        self._waiting: dict[Key, _Entry] = {}
        self._counts = [0, 0]  # waiting keys per priority
        self._active: set[Key] = set()
        self._dirty: dict[Key, tuple[str, int]] = {}
        self._heap: list[tuple[float, int, Key, str]] = []  # (due, seq, key, slot)
        self._delayed: dict[tuple[Key, str], _Delayed] = {}
        self._failures: dict[Key, int] = {}
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # ---- adding ----------------------------------------------------------------------------------
    def add(self, key: Key, cause: str, priority: int = FIRST, settle: float = 0.0) -> None:
        """Queue `key`. With `settle` > 0 the pass waits that long for more events of the same burst, which merge
        into it (one pass at most `settle` late, never pushed further back); a key already waiting merges now."""
        with self._cond:
            if settle <= 0 or key in self._waiting:
                self._add(key, cause, priority)
            elif (pending := self._delayed.get((key, SETTLE_SLOT))) is not None:
                pending.cause, pending.priority = self.stronger(pending.cause, cause), min(pending.priority, priority)
            else:
                self._delay(key, cause, priority, settle, SETTLE_SLOT)
            self._start()

    def add_after(self, key: Key, cause: str, delay: float, priority: int = REFRESH, slot: str = WAKE_SLOT) -> None:
        """Add `key` after `delay` seconds, replacing this key's pending add of the same slot."""
        with self._cond:
            self._delay(key, cause, priority, delay, slot)
            self._start()

    def _delay(self, key: Key, cause: str, priority: int, delay: float, slot: str) -> None:
        seq = next(self._seq)
        self._delayed[(key, slot)] = _Delayed(seq, cause, priority)
        heapq.heappush(self._heap, (self.clock() + max(0.0, delay), seq, key, slot))
        # A replaced or cancelled add stays in the heap until its time comes, which for a wake-up can be a day
        # ahead while every pass sets it again: rebuild from the live ones once the stale ones outnumber them.
        if len(self._heap) > 2 * len(self._delayed) + 64:
            self._heap = [entry for entry in self._heap
                          if (live := self._delayed.get((entry[2], entry[3]))) is not None and live.seq == entry[1]]
            heapq.heapify(self._heap)
        self._cond.notify()

    def cancel(self, key: Key, slot: str = WAKE_SLOT) -> None:
        """Drop this key's pending delayed add of `slot` (its heap entry goes stale; see _delay)."""
        with self._cond:
            self._delayed.pop((key, slot), None)

    def forget(self, key: Key) -> None:
        """The object is gone: no wake-up, no retry, no backoff memory. A waiting pass still runs (and finds
        nothing); a pass in progress ends normally."""
        with self._cond:
            for slot in (WAKE_SLOT, RETRY_SLOT, SETTLE_SLOT):
                self._delayed.pop((key, slot), None)
            self._failures.pop(key, None)

    def _add(self, key: Key, cause: str, priority: int) -> None:
        if key in self._active:  # run again once the pass in progress ends
            old = self._dirty.get(key)
            self._dirty[key] = (self.stronger(old[0], cause), min(old[1], priority)) if old else (cause, priority)
            return
        entry = self._waiting.get(key)
        if entry is None:
            entry = self._waiting[key] = _Entry(cause, priority, next(self._seq), self.clock())
        else:
            entry.cause = self.stronger(entry.cause, cause)
            if priority >= entry.priority:
                return
            self._counts[entry.priority] -= 1
            entry.priority, entry.seq = priority, next(self._seq)  # its place in the slower deque goes stale
        self._counts[entry.priority] += 1
        self._ready[entry.priority].append((entry.seq, key))
        self._gauge()
        self._cond.notify()

    # ---- taking ----------------------------------------------------------------------------------
    def _due(self) -> float | None:
        """Move due delayed adds to the ready deques; returns seconds until the next one (None: none)."""
        now = self.clock()
        while self._heap:
            due, seq, key, slot = self._heap[0]
            pending = self._delayed.get((key, slot))
            if pending is None or pending.seq != seq:  # cancelled or replaced
                heapq.heappop(self._heap)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._delayed[(key, slot)]
            self._add(key, pending.cause, pending.priority)
        return None

    def _take(self) -> tuple[Key, str] | None:
        while True:
            if self._stopped:
                return None
            wait = self._due()
            for priority, ready in enumerate(self._ready):
                while ready:
                    seq, key = ready.popleft()
                    entry = self._waiting.get(key)
                    if entry is None or entry.seq != seq or entry.priority != priority:
                        continue  # stale: moved to a faster deque, or already taken
                    del self._waiting[key]
                    self._counts[priority] -= 1
                    self._active.add(key)
                    self._gauge()
                    metrics.WORKQUEUE_WAIT.labels(priority=PRIORITY_NAMES[priority]).observe(
                        self.clock() - entry.since)
                    return key, entry.cause
            self._cond.wait(wait)

    def _done(self, key: Key, cause: str, error: BaseException | None) -> None:
        with self._cond:
            self._active.discard(key)
            if error is None:
                self._failures.pop(key, None)
                self._delayed.pop((key, RETRY_SLOT), None)
            elif self.retry(error):
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
                metrics.WORKQUEUE_RETRIES.inc()
                api_error = getattr(error, "status", None) is not None  # an API answer: its status says enough
                log.warning("pass of %s (%s) failed, again in %gs: %s", key, cause, delay,
                            f"{error.status} {getattr(error, 'reason', '')}" if api_error else repr(error),
                            exc_info=None if api_error else error)
                self._delay(key, cause, REFRESH, delay, RETRY_SLOT)
            dirty = self._dirty.pop(key, None)
            if dirty:
                self._add(key, *dirty)
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                item = self._take()
            if item is None:
                return
            key, cause = item
            error: BaseException | None = None
            try:
                self.process(key, cause)
            except Exception as err:  # noqa: BLE001 - the retry policy decides; the worker lives on
                error = err
            self._done(key, cause, error)

    # ---- lifecycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start the workers on the first add: a replica that never adds (a standby) runs no threads."""
        if self._threads or self._stopped:
            return
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Let the passes in progress end, start no more."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def depth(self) -> int:
        """Keys waiting (not counting the ones in progress nor the delayed adds)."""
        with self._cond:
            return len(self._waiting)

    def _gauge(self) -> None:
        for priority, count in enumerate(self._counts):
            metrics.WORKQUEUE_DEPTH.labels(priority=PRIORITY_NAMES[priority]).set(count)
