"""Latency of one Triton replica under load: an M/M/c-ish model with a fluid backlog.

The model, per replica (load is spread evenly over the ready replicas):

* A request takes `service_ms` when it does not wait (pre/post-processing, batching and the
  GPU pass of a lightly loaded server).
* Waiting is that of an M/M/c queue: `concurrency` parallel slots (think model instances x
  batches in flight), Poisson arrivals. With offered load a = rate / slot_rate, the
  probability to wait is Erlang C, P(wait > t) = C * exp(-(c*slot_rate - rate) * t), the mean
  wait C / (c*slot_rate - rate), the p99 wait max(0, ln(100*C)) / (c*slot_rate - rate).
* slot_rate is not an input: it is calibrated so that at `capacity_rps` (what `peakserve
  bench` reports: the rate one replica serves at the SLO) the latency statistic equals the
  SLO exactly. Below capacity the SLO holds, above it it does not: the bench figure and the
  model agree by construction. Saturation (c * slot_rate) is somewhat above capacity.
* Past saturation a fluid backlog Q builds at (arrivals - n * saturation) per second and
  drains at the surplus; every request also waits Q / (n * saturation). The stationary part
  is evaluated at min(utilization, RHO_CAP) so that overload stays finite.

Latency = service + wait (p99 or mean, the SLO's statistic). The queue-time metric the HPA
sees is Triton's nv_inference_queue_duration_us per request: the *mean* wait in microseconds,
whatever the SLO statistic, but never below `batch_delay_us`. With the dynamic batcher on, a
request that finds an idle instance still waits up to maxQueueDelayMicroseconds for a batch
to fill, and at the rates of a recommendation model batches never fill, so Triton reports about
that delay as queue time even when idle (peakserve's default: 100 us). The delay is too small
to matter for latency and is left out of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

RHO_CAP = 0.99


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (1 when a >= c)."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    b = 1.0  # Erlang B by the stable recursion
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return servers * b / (servers - offered_load * (1 - b))


def erlang_c_array(servers: int, offered_load: np.ndarray) -> np.ndarray:
    """erlang_c over an array of offered loads."""
    a = np.asarray(offered_load, dtype=float)
    b = np.ones_like(a)
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = servers * b / (servers - a * (1 - b))
    return np.where(a >= servers, 1.0, np.where(a <= 0, 0.0, c))


@dataclass(frozen=True)
class ServiceModel:
    """One replica's latency as a function of its request rate. Times in ms, rates per second."""

    capacity_rps: float
    slo_ms: float = 100.0
    service_ms: float = 20.0
    concurrency: int = 8
    statistic: Literal["p99", "mean"] = "p99"
    batch_delay_us: float = 0.0
    slot_rate: float = field(init=False)

    def __post_init__(self) -> None:
        if self.capacity_rps <= 0:
            raise ValueError("capacity must be > 0 requests/s")
        if not 0 < self.service_ms < self.slo_ms:
            raise ValueError(f"service time ({self.service_ms} ms) must be below the SLO ({self.slo_ms} ms)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        object.__setattr__(self, "slot_rate", self._calibrate())

    @property
    def saturation_rps(self) -> float:
        """Most requests/s one replica completes (c * slot_rate)."""
        return self.concurrency * self.slot_rate

    def _wait_s(self, rate: float, slot_rate: float, statistic: str) -> float:
        c = self.concurrency
        surplus = c * slot_rate - rate
        if surplus <= 0:
            return math.inf
        pw = erlang_c(c, rate / slot_rate)
        if statistic == "mean":
            return pw / surplus
        return max(0.0, math.log(100.0 * pw)) / surplus if pw > 0 else 0.0

    def _calibrate(self) -> float:
        budget = (self.slo_ms - self.service_ms) / 1000.0
        lo = self.capacity_rps / self.concurrency  # saturated at capacity: infinite wait
        hi = lo * 2
        while self._wait_s(self.capacity_rps, hi, self.statistic) > budget:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            if self._wait_s(self.capacity_rps, mid, self.statistic) > budget:
                lo = mid
            else:
                hi = mid
        return hi

    def stationary_wait_ms(self, per_replica_rps, statistic: str | None = None):
        """Wait of the M/M/c part at this rate (a number or an array), utilization capped at
        RHO_CAP."""
        rate = np.minimum(np.asarray(per_replica_rps, dtype=float), RHO_CAP * self.saturation_rps)
        surplus = self.saturation_rps - rate
        pw = erlang_c_array(self.concurrency, rate / self.slot_rate)
        if (statistic or self.statistic) == "mean":
            wait = pw / surplus
        else:
            with np.errstate(divide="ignore"):
                wait = np.maximum(0.0, np.log(100.0 * pw)) / surplus
        wait = 1000.0 * wait
        return float(wait) if wait.ndim == 0 else wait

    def latency_ms(self, per_replica_rps, backlog_wait_ms=0.0):
        """The SLO statistic of the latency: service + stationary wait + backlog wait."""
        return self.service_ms + self.stationary_wait_ms(per_replica_rps) + backlog_wait_ms

    def queue_time_us(self, per_replica_rps, backlog_wait_ms=0.0):
        """Triton's mean queue time per request, microseconds (the HPA's queueTime metric)."""
        wait_us = 1000.0 * (self.stationary_wait_ms(per_replica_rps, "mean") + backlog_wait_ms)
        out = np.maximum(wait_us, self.batch_delay_us)
        return float(out) if np.ndim(out) == 0 else out

    def in_flight(self, per_replica_rps: float) -> float:
        """Mean requests in flight (queued plus executing) per replica at this rate, by Little's law:
        the concurrency signal's value."""
        return per_replica_rps * (self.service_ms + self.stationary_wait_ms(per_replica_rps, "mean")) / 1000.0

    def replicas_for(self, rps: float) -> int:
        """Fewest replicas that keep the SLO at this total rate (at least 1)."""
        return max(1, math.ceil(rps / self.capacity_rps - 1e-9))

    def utilization_for_queue_time(self, target_us: float) -> float:
        """Per-replica rate, as a fraction of capacity, at which the mean queue time reaches
        target_us: where an HPA with that target settles."""
        lo, hi = 0.0, self.saturation_rps * RHO_CAP
        if self.queue_time_us(hi) < target_us:
            return hi / self.capacity_rps
        for _ in range(100):
            mid = (lo + hi) / 2
            if self.queue_time_us(mid) < target_us:
                lo = mid
            else:
                hi = mid
        return lo / self.capacity_rps

    def queue_time_at(self, fraction_of_capacity: float) -> float:
        """Mean queue time (us) when each replica gets this fraction of its capacity."""
        return self.queue_time_us(fraction_of_capacity * self.capacity_rps)
