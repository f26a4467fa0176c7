"""Statistics of a load run: percentiles, per-second time series, and the run's result.

Pure functions over the per-request samples the runner records (no I/O, no clock), so that they
can be tested on known arrays. Times are seconds on one monotonic clock (``time.perf_counter``);
latencies are reported in milliseconds.

Percentiles are nearest-rank: the p-th percentile is the smallest recorded value with at least p%
of the values at or below it (``numpy.percentile(..., method="inverted_cdf")``), so every figure is
a latency some request really had and p100 is the maximum.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
SEND_LAG_WARN_MS = 10.0   # fixed rate: a send lag p99 above this means the client fell behind


class Sample(NamedTuple):
    """One request that was sent: when it was due, sent and finished; its endpoint and error kind."""

    intended: float    # when the schedule wanted it sent (fixed rate); = sent in closed loop
    sent: float
    done: float
    endpoint: str      # the endpoint's URL as given
    error: str | None  # None: success; else the error kind ("UNAVAILABLE", "timeout", ...)


class Drop(NamedTuple):
    """A scheduled request that was never sent (in-flight cap reached, or no live endpoint)."""

    intended: float
    kind: str          # "inflight_cap" | "no_endpoint"


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100) of ``values``; None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q, method="inverted_cdf"))


def latency_summary(latencies_ms: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """``{count, mean, p50, p90, p99, max}`` in ms (rounded to µs); None figures when empty."""
    arr = np.asarray(latencies_ms, dtype=float)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    if arr.size == 0:
        out.update({"mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None})
        return out
    out["mean"] = round(float(arr.mean()), 3)
    for q in PERCENTILES:
        out[f"p{q}"] = round(percentile(arr, q), 3)
    out["max"] = round(float(arr.max()), 3)
    return out


def time_series(samples: Iterable[Sample], drops: Iterable[Drop], origin: float, end: float,
                resolution: float = 1.0) -> list[dict[str, Any]]:
    """Buckets of ``resolution`` seconds from ``origin`` to ``end`` (the last one may be partial).

    Each bucket ``{"t", "sent", "completed", "errors", "dropped", "p99_ms"}``: ``t`` is the bucket's
    start in seconds after ``origin``; requests count as sent (and drops as dropped) in the bucket
    of their intended start, and as completed (successes, with their latency from the intended
    start feeding ``p99_ms``) or errors in the bucket where they finished. Times outside
    ``[origin, end]`` are left out; ``p99_ms`` is None for a bucket with no success.
    """
    if resolution <= 0:
        raise ValueError("resolution must be > 0")
    n = max(0, math.ceil((end - origin) / resolution - 1e-9))
    sent = [0] * n
    completed = [0] * n
    errors = [0] * n
    dropped = [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]

    def bucket(t: float) -> int | None:
        if n == 0 or not origin <= t <= end:
            return None
        return min(math.floor((t - origin) / resolution), n - 1)  # t == end: the last bucket

    for s in samples:
        i = bucket(s.intended)
        if i is not None:
            sent[i] += 1
        j = bucket(s.done)
        if j is not None:
            if s.error is None:
                completed[j] += 1
                latencies[j].append((s.done - s.intended) * 1000.0)
            else:
                errors[j] += 1
    for d in drops:
        i = bucket(d.intended)
        if i is not None:
            dropped[i] += 1
    series = []
    for i in range(n):
        p99 = percentile(latencies[i], 99)
        series.append({"t": round(i * resolution, 6), "sent": sent[i], "completed": completed[i],
                       "errors": errors[i], "dropped": dropped[i],
                       "p99_ms": None if p99 is None else round(p99, 3)})
    return series


@dataclass
class EndpointStats:
    """One endpoint's share of the measured requests."""

    url: str
    protocol: str
    sent: int = 0
    completed: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    skips: int = 0       # times it was taken out of the rotation after consecutive failures
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class LoadResult:
    """What a bounded load run measured (warmup excluded unless said otherwise).

    ``latency_ms`` runs from each request's intended start (fixed rate: the schedule's time, so a
    server that falls behind shows its queueing: no coordinated omission) and ``service_ms`` from
    its actual send; in fixed-concurrency mode the two are the same. ``throughput_rps`` counts
    successful requests over ``elapsed_s`` (from the end of warmup to the later of the stop and the
    last measured completion). ``send_lag_ms`` (fixed rate) shows how late the generator itself
    sent requests: a large lag means the client machine, not the server, was the bottleneck.
    ``total`` includes warmup: its ``completed`` is what the servers'
    ``nv_inference_request_success`` counters grew by.
    """

    model: str
    mode: str                     # "rate" | "concurrency"
    protocol: str                 # default protocol of scheme-less URLs
    rate: float | None
    concurrency: int | None
    arrival: str | None           # "constant" | "poisson" in rate mode
    batch_rows: int
    warmup_s: float
    duration_s: float
    max_requests: int | None
    stop_reason: str              # "duration" | "max_requests"
    elapsed_s: float
    sent: int
    completed: int
    errors: int
    dropped: int
    errors_by_kind: dict[str, int]
    dropped_by_kind: dict[str, int]
    throughput_rps: float
    rows_per_s: float
    offered_rps: float | None     # fixed rate: scheduled requests per second of the window
    latency_ms: dict[str, Any]
    service_ms: dict[str, Any]
    send_lag_ms: dict[str, Any]   # how late requests were sent after their intended start
    endpoints: dict[str, EndpointStats]
    warmup: dict[str, int]
    total: dict[str, int]
    series: list[dict[str, Any]]
    endpoint_refresh_errors: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, *, series: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not series:
            d.pop("series")
        return d

    def ok(self) -> bool:
        """Something succeeded and nothing failed (drops in fixed-rate mode count as failures)."""
        return self.completed > 0 and self.errors == 0 and self.dropped == 0


def _rounded(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def summarize(samples: Sequence[Sample], drops: Sequence[Drop], *, t0: float, measure_from: float,
              stop_at: float, endpoints: dict[str, str], skips: dict[str, int] | None = None,
              **params: Any) -> LoadResult:
    """The LoadResult of a run from its samples and drops.

    ``t0``: the run's start (the time series' origin); ``measure_from``: the end of warmup;
    ``stop_at``: when sending stopped. A sample is measured when its intended start is at or after
    ``measure_from``. ``endpoints``: url -> protocol of every endpoint the run used (in order).
    ``params``: the LoadResult's run parameters (model, mode, ...; see LoadResult).
    """
    measured = [s for s in samples if s.intended >= measure_from]
    warm = [s for s in samples if s.intended < measure_from]
    m_drops = [d for d in drops if d.intended >= measure_from]
    ok = [s for s in measured if s.error is None]
    last_done = max((s.done for s in measured), default=stop_at)
    elapsed = max(stop_at, last_done) - measure_from
    elapsed = max(elapsed, 0.0)
    batch_rows = int(params["batch_rows"])
    per_ep: dict[str, EndpointStats] = {
        url: EndpointStats(url, proto, skips=(skips or {}).get(url, 0))
        for url, proto in endpoints.items()}
    by_ep: dict[str, list[float]] = {url: [] for url in endpoints}
    for s in measured:
        e = per_ep.setdefault(s.endpoint, EndpointStats(s.endpoint, "?"))
        e.sent += 1
        if s.error is None:
            e.completed += 1
            by_ep.setdefault(s.endpoint, []).append((s.done - s.intended) * 1000.0)
        else:
            e.errors += 1
            e.errors_by_kind[s.error] = e.errors_by_kind.get(s.error, 0) + 1
    for url, lat in by_ep.items():
        summary = latency_summary(lat)
        per_ep[url].p50_ms, per_ep[url].p99_ms = summary["p50"], summary["p99"]
    offered = None
    if params.get("mode") == "rate":
        window = stop_at - measure_from
        offered = _rounded((len(measured) + len(m_drops)) / window) if window > 0 else 0.0
    send_lag = latency_summary([(s.sent - s.intended) * 1000.0 for s in measured])
    warnings = []
    if params.get("mode") == "rate" and (send_lag["p99"] or 0.0) > SEND_LAG_WARN_MS:
        warnings.append(f"the load generator fell behind its schedule (send lag p99 "
                        f"{send_lag['p99']:.1f} ms): latencies from the intended start include "
                        "that lag; lower the rate or spread it over more generator processes")
    if params.get("endpoint_refresh_errors"):
        warnings.append(f"reading the endpoint list failed {params['endpoint_refresh_errors']} "
                        "time(s); the previous list was kept")
    return LoadResult(
        **params,
        warnings=warnings,
        elapsed_s=_rounded(elapsed),
        sent=len(measured), completed=len(ok), errors=len(measured) - len(ok), dropped=len(m_drops),
        errors_by_kind=dict(Counter(s.error for s in measured if s.error is not None)),
        dropped_by_kind=dict(Counter(d.kind for d in m_drops)),
        throughput_rps=_rounded(len(ok) / elapsed) if elapsed > 0 else 0.0,
        rows_per_s=_rounded(len(ok) * batch_rows / elapsed) if elapsed > 0 else 0.0,
        offered_rps=offered,
        latency_ms=latency_summary([(s.done - s.intended) * 1000.0 for s in ok]),
        service_ms=latency_summary([(s.done - s.sent) * 1000.0 for s in ok]),
        send_lag_ms=send_lag,
        endpoints=per_ep,
        warmup={"sent": len(warm), "completed": sum(s.error is None for s in warm),
                "errors": sum(s.error is not None for s in warm),
                "dropped": len(drops) - len(m_drops)},
        total={"sent": len(samples), "completed": sum(s.error is None for s in samples),
               "errors": sum(s.error is not None for s in samples), "dropped": len(drops)},
        series=time_series(samples, drops, t0, max(stop_at, last_done)),
    )
