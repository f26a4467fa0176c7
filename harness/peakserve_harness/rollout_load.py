"""Traffic through a rollout, as a Service would send it, and what it saw: for the rollout tests and demo.

Open-loop load from `peakserve bench`'s library over the Ready pods of both tracks (the pod agent's
endpoints, re-read every 0.2 s, never skipping a failing pod: a Service does not), bounded in time;
and the lowest number of Ready pods seen while it ran.
"""

from __future__ import annotations

import asyncio
import threading
import time

from peakserve.loadgen import run_load

from .pods.probed_pods import ProbedPods


class RolloutLoad:
    def __init__(self, pods: ProbedPods, namespace: str, model: str, *, rate: float = 20,
                 max_seconds: float = 480):
        self.pods, self.namespace, self.model, self.rate, self.max_seconds = pods, namespace, model, rate, max_seconds
        self.completed = self.failed = 0
        self.failures: dict[str, int] = {}
        self.lowest_ready: int | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, daemon=True),
                         threading.Thread(target=self._count, daemon=True)]

    def ready(self) -> int:
        return len(self.pods.http_endpoints(self.namespace))

    def _count(self) -> None:
        while not self._stop.is_set():
            ready = self.ready()
            self.lowest_ready = ready if self.lowest_ready is None else min(self.lowest_ready, ready)
            self._stop.wait(0.2)

    def _load(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            result = asyncio.run(run_load(lambda: self.pods.grpc_endpoints(self.namespace), self.model,
                                          mode="rate", rate=self.rate, duration=5, max_requests=int(self.rate * 5),
                                          refresh_interval=0.2, timeout_s=5, skip_after=10**9))
            self.completed += result.completed
            self.failed += result.errors
            for kind, count in result.errors_by_kind.items():  # what failed, for the test's message
                self.failures[kind] = self.failures.get(kind, 0) + count

    def start(self) -> "RolloutLoad":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> "RolloutLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
