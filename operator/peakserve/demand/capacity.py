"""One replica's capacity at the SLO, learned from what the pods did: the highest per-pod request rate, over a
5-minute window, at which the mean latency still met the SLO. That is a lower bound of the true capacity (the
pods may never have been pushed harder), so the autoscaler errs towards more replicas; the operator keeps the
highest value ever learned, so the bound only rises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

MIN_SAMPLES = 12   # an hour of one pod's 5-minute windows, or a few minutes of a dozen pods


@dataclass(frozen=True)
class PodWindow:
    """One pod over one 5-minute window: requests/s served, requests in flight (Little's law), mean latency."""

    rate: float
    concurrency: float
    latency_ms: float


@dataclass(frozen=True)
class Learned:
    requests_per_second: float | None
    concurrency: float | None
    samples: int
    within_slo: int
    message: str


def learn_capacity(windows: Iterable[PodWindow], slo_ms: float, min_samples: int = MIN_SAMPLES) -> Learned:
    busy = [w for w in windows if w.rate > 0]
    good = [w for w in busy if w.latency_ms <= slo_ms]
    if len(busy) < min_samples or not good:
        return Learned(None, None, len(busy), len(good),
                       f"{len(busy)} busy pod windows ({len(good)} within the {slo_ms:g} ms SLO), "
                       f"{min_samples} needed with at least one within it")
    best = max(good, key=lambda w: w.rate)
    return Learned(best.rate, best.concurrency, len(busy), len(good),
                   f"highest 5-minute per-pod rate within the {slo_ms:g} ms SLO, out of {len(busy)} busy pod windows")
