"""Time-stepped simulation of a Triton Deployment under a traffic trace and a scaling policy.

Every `dt` seconds (5 by default):

1. On an HPA sync tick (every `Pipeline.hpa_sync_s`) the HPA reads the queue-time metric as
   the metrics pipeline delivers it and writes a replica count (plan.hpa.HpaState). Scheduled
   floors raise minReplicas (and maxReplicas if needed) while active.
2. The Deployment follows: new pods are created at once and serve `startup_s` later
   (scheduling, image pull, model load); removed pods go at once, not-ready ones first, then
   the newest.
3. Arrivals are spread evenly over the ready pods; latency and queue time follow
   plan.queueing.ServiceModel (M/M/c waits plus a fluid backlog when overloaded).

The metrics pipeline: Prometheus scrapes Triton every `scrape_interval_s`; the adapter's
query averages queue time per request over the last `rate_window_s` of scrapes (Triton's
example: delta(queue_us[30s]) / delta(requests[30s])); a new pod has metrics once it has been
scraped after becoming ready and the adapter has relisted its series (`adapter_relist_s`).
Until then the HPA counts it as "missing" (0 on a scale-up, the target on a scale-down): the
model takes starting pods to be Running while Triton loads the model. (Pods still Pending, such
as during an image pull, are ignored by the controller instead; that changes only its
tolerance checks, not the replica count it computes.)

Accounting, over the trace (after a warm-up at the first rate, not counted):
* SLO-violation minutes: trace minutes in which the latency statistic exceeded the SLO at
  any simulated instant.
* GPU-hours: pod-seconds / 3600, counting every pod from creation (start and load included).
* cost = GPU-hours x $/GPU-hour; peak replicas = most pods that existed at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .hpa import HpaState
from .policies import Hpa, Oracle, Policy, Static
from .queueing import ServiceModel
from .trace import Trace

SLO_EPSILON = 1e-9
TIME_AVERAGED = ("requestRate", "concurrency")


@dataclass(frozen=True)
class Pipeline:
    """Delays between Triton's counters and the HPA's decision (seconds)."""

    scrape_interval_s: float = 15.0
    rate_window_s: float = 30.0
    adapter_relist_s: float = 30.0
    hpa_sync_s: float = 15.0

    @property
    def delay_s(self) -> float:
        """Worst-case time from a change to the HPA acting on it: a scrape, a relist, a sync."""
        return self.scrape_interval_s + self.adapter_relist_s + self.hpa_sync_s


@dataclass
class PolicyResult:
    name: str
    label: str
    violation_minutes: int
    step_violation_minutes: int
    gpu_hours: float
    cost: float
    peak_replicas: int
    times: np.ndarray = field(repr=False)
    rps: np.ndarray = field(repr=False)
    replicas: np.ndarray = field(repr=False)
    ready: np.ndarray = field(repr=False)
    latency_ms: np.ndarray = field(repr=False)
    forecasts: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (time, peak) made
    forecast_window_s: float = 0.0  # what each forecast covers: [time, time + window)

    def summary(self) -> dict:
        return {"policy": self.name, "label": self.label,
                "sloViolationMinutes": self.violation_minutes,
                "sloViolationMinutesAtStep": self.step_violation_minutes,
                "gpuHours": round(self.gpu_hours, 2), "cost": round(self.cost, 2),
                "peakReplicas": self.peak_replicas}

    def violated_minutes(self, slo_ms: float) -> list[int]:
        bad = self.latency_ms > slo_ms * (1 + SLO_EPSILON)
        return sorted(set(np.floor(self.times[bad] / 60.0).astype(int).tolist()))

    def per_minute(self) -> dict[str, list]:
        """Series downsampled to one value per minute (replicas: max, latency: max)."""
        minute = np.floor(self.times / 60.0).astype(int)
        keys = np.unique(minute)
        idx = np.searchsorted(minute, keys)
        def agg(a, fn):
            return [round(float(x), 2) for x in fn.reduceat(a, idx)]
        lat = np.where(np.isfinite(self.latency_ms), self.latency_ms, 1e9)
        return {"minute": keys.tolist(), "rps": agg(self.rps, np.maximum),
                "replicas": [int(x) for x in np.maximum.reduceat(self.replicas, idx)],
                "ready": [int(x) for x in np.minimum.reduceat(self.ready, idx)],
                "latencyMs": agg(lat, np.maximum)}


def _ceil_to(t: float, period: float) -> float:
    return math.ceil(t / period - 1e-9) * period


def _sliding_max_ahead(values: np.ndarray, steps: int) -> np.ndarray:
    """out[i] = max(values[i : i + steps + 1])."""
    out = values.copy()
    for k in range(1, steps + 1):
        out[:-k] = np.maximum(out[:-k], values[k:])
    return out


def _sliding_min_behind(values: np.ndarray, steps: int) -> np.ndarray:
    """out[i] = min(values[max(0, i - steps) : i + 1])."""
    out = values.copy()
    for k in range(1, steps + 1):
        out[k:] = np.minimum(out[k:], values[:-k])
    return out


def simulate(trace: Trace, model: ServiceModel, policy: Policy, *, startup_s: float = 180.0,
             pipeline: Pipeline = Pipeline(), dt: float = 5.0, gpu_hour_cost: float = 2.5,
             span: tuple[float, float] | None = None, warmup_s: float = 1800.0,
             step_window: tuple[float, float] | None = None,
             progress: Callable[[float], None] | None = None) -> PolicyResult:
    """Run one policy over the trace (or over `span` = (from, to) seconds of it)."""
    begin, end = span if span else (0.0, trace.duration_s)
    times = np.arange(begin - warmup_s, end, dt)
    rates = trace.rate_at(np.clip(times, begin, None))  # the warm-up holds the first rate
    counted = times >= begin
    n = len(times)
    replicas = np.zeros(n, dtype=int)
    ready = np.zeros(n, dtype=int)
    latency = np.zeros(n)

    forecasts: list[tuple[float, float]] = []
    if isinstance(policy, Static):
        replicas[:] = ready[:] = policy.replicas
        _serve(model, rates, ready, latency, dt)
    elif isinstance(policy, Oracle):
        needed = np.array([model.replicas_for(r) for r in rates])
        lead_steps = int(math.ceil(startup_s / dt))
        replicas[:] = _sliding_max_ahead(needed, lead_steps)
        ready[:] = _sliding_min_behind(replicas, lead_steps)
        ready[:lead_steps] = replicas[:lead_steps]  # provisioned before the warm-up began
        _serve(model, rates, ready, latency, dt)
    else:
        forecasts = _run_hpa(model, policy, trace, times, rates, replicas, ready, latency, startup_s, pipeline, dt,
                             progress)

    violated = latency > model.slo_ms * (1 + SLO_EPSILON)
    minutes = np.floor(times / 60.0).astype(int)
    bad_minutes = set(minutes[violated & counted].tolist())
    at_step = 0
    if step_window:
        lo, hi = step_window
        at_step = sum(1 for m in bad_minutes if lo <= m * 60.0 < hi)
    gpu_hours = float(replicas[counted].sum()) * dt / 3600.0
    if progress:
        progress(1.0)
    return PolicyResult(
        name=getattr(policy, "name", "policy"), label=getattr(policy, "label", ""),
        violation_minutes=len(bad_minutes), step_violation_minutes=at_step,
        gpu_hours=gpu_hours, cost=gpu_hours * gpu_hour_cost,
        peak_replicas=int(replicas[counted].max()),
        times=times[counted], rps=rates[counted], replicas=replicas[counted], ready=ready[counted],
        latency_ms=latency[counted],
        forecasts=[(t, p) for t, p in forecasts if t >= begin and p is not None],
        forecast_window_s=(policy.predictive.lead_s + policy.predictive.refresh_s
                           if isinstance(policy, Hpa) and policy.predictive else 0.0))


def _backlog(rates: np.ndarray, ready: np.ndarray, saturation_rps: float, dt: float, start: float = 0.0
             ) -> np.ndarray:
    """Fluid backlog (requests) after each step, for a known ready-pod series."""
    out = np.empty(len(rates))
    backlog = start
    for i in range(len(rates)):
        backlog = max(0.0, backlog + (rates[i] - ready[i] * saturation_rps) * dt)
        out[i] = backlog
    return out


def _latency(model: ServiceModel, rates: np.ndarray, ready: np.ndarray, backlog: np.ndarray) -> np.ndarray:
    """Latency statistic per step (inf without a ready pod)."""
    serving = ready > 0
    n = np.maximum(ready, 1)
    backlog_ms = 1000.0 * backlog / (n * model.saturation_rps)
    return np.where(serving, model.latency_ms(rates / n, backlog_ms), math.inf)


def _serve(model: ServiceModel, rates: np.ndarray, ready: np.ndarray, latency: np.ndarray, dt: float) -> None:
    """Latency for a given ready-pod series (no HPA in the loop)."""
    latency[:] = _latency(model, rates, ready, _backlog(rates, ready, model.saturation_rps, dt))


def _metric_values(metric: str, model: ServiceModel, rates: np.ndarray, ready: np.ndarray,
                   backlog: np.ndarray) -> np.ndarray:
    """Per-pod value of the HPA's metric in its spec unit (see render/autoscaler.py)."""
    n = np.maximum(ready, 1)
    per_pod = rates / n
    queue_us = model.queue_time_us(per_pod, 1000.0 * backlog / (n * model.saturation_rps))
    if metric == "queueTime":  # microseconds per request
        return queue_us
    if metric == "pendingRequests":  # requests waiting per pod, by Little's law
        return per_pod * queue_us / 1e6
    if metric == "gpuUtilization":  # percent busy
        return 100.0 * np.minimum(1.0, per_pod / model.saturation_rps)
    served = np.minimum(per_pod, model.saturation_rps)  # the success counter counts completions
    if metric == "requestRate":  # requests/s served per pod
        return served
    if metric == "concurrency":  # requests in flight per pod (Little's law: served rate x mean latency)
        latency_s = (model.service_ms + model.stationary_wait_ms(per_pod, "mean")) / 1000.0
        return served * (latency_s + backlog / (n * model.saturation_rps))
    raise ValueError(f"unknown metric {metric!r}")


def _run_hpa(model: ServiceModel, policy: Hpa, trace: Trace, times: np.ndarray, rates: np.ndarray,
             replicas: np.ndarray, ready: np.ndarray, latency: np.ndarray, startup_s: float,
             pipeline: Pipeline, dt: float, progress: Callable[[float], None] | None
             ) -> list[tuple[float, float | None]]:
    predictor = _Predictor(policy.predictive, trace) if policy.predictive else None
    lo, hi = policy.bounds(times[0])
    start_count = min(max(model.replicas_for(rates[0]), lo), hi)
    pods: list[float] = [times[0] - startup_s] * start_count  # ready-at times
    hpa = HpaState(lo, hi, policy.target, policy.behavior, policy.tolerance)
    backlog = np.zeros(len(times))
    level = 0.0
    saturation = model.saturation_rps
    scrape_steps: list[int] = []  # step index of each scrape
    next_scrape = _ceil_to(times[0], pipeline.scrape_interval_s)
    next_sync = _ceil_to(times[0], pipeline.hpa_sync_s)
    report_every = max(len(times) // 100, 1)
    n_ready = sum(1 for r in pods if r <= times[0])
    next_ready = min((r for r in pods if r > times[0]), default=math.inf)

    for i, t in enumerate(times):
        if t >= next_scrape - 1e-9:
            scrape_steps.append(i)
            next_scrape += pipeline.scrape_interval_s
        if t >= next_sync - 1e-9:
            next_sync += pipeline.hpa_sync_s
            hpa.min_replicas, hpa.max_replicas = policy.bounds(t, predictor.floor(t, policy.max_replicas)
                                                               if predictor else 0)
            metric, with_metrics = _observe(policy.metric, model, scrape_steps, rates, ready, backlog,
                                            pods, times, t, pipeline)
            desired = hpa.step(t, len(pods), metric, pods_with_metrics=with_metrics)
            if desired != len(pods):
                pods = _scale(pods, desired, t, startup_s)
                next_ready = -math.inf  # recount
        if t >= next_ready:
            n_ready = sum(1 for r in pods if r <= t)
            next_ready = min((r for r in pods if r > t), default=math.inf)
        replicas[i], ready[i] = len(pods), n_ready
        level = max(0.0, level + (rates[i] - n_ready * saturation) * dt)
        backlog[i] = level
        if progress and i % report_every == 0:
            progress(i / len(times))
    latency[:] = _latency(model, rates, ready, backlog)
    return predictor.made if predictor else []


def _observe(metric_name: str, model: ServiceModel, scrape_steps: list[int], rates: np.ndarray,
             ready: np.ndarray, backlog: np.ndarray, pods: list[float], times: np.ndarray, t: float,
             pipeline: Pipeline) -> tuple[float | None, int]:
    """(the metric's average over the last rate window, pods with metrics) as the HPA reads
    them at t. The average is request-weighted over the steps between the window's first and
    last scrape, like delta(sum) / delta(count) over Triton's counters."""
    if len(scrape_steps) < 2:
        return None, 0
    last = scrape_steps[-1]
    first = scrape_steps[0]
    for step in reversed(scrape_steps):
        if times[step] <= times[last] - pipeline.rate_window_s + 1e-9:
            first = step
            break
    window = slice(first, last)
    served = ready[window] > 0
    # Rates and in-flight counts are time averages (rate() of a counter); queue times are per request.
    weights = served * 1.0 if metric_name in TIME_AVERAGED else rates[window] * served
    if weights.sum() <= 0:
        metric = 0.0
    else:
        values = _metric_values(metric_name, model, rates[window], ready[window], backlog[window])
        metric = float(np.sum(values * weights) / weights.sum())
    with_metrics = 0
    for ready_at in pods:
        first_scrape = _ceil_to(ready_at, pipeline.scrape_interval_s)
        listed = _ceil_to(first_scrape, pipeline.adapter_relist_s) if pipeline.adapter_relist_s > 0 else first_scrape
        if listed <= t + 1e-9:
            with_metrics += 1
    return metric, with_metrics


class _Predictor:
    """The predictive floor over a simulated run: the history is what Prometheus would hold, the
    5-minute rates of the whole trace (from its start, whatever span is simulated), and each forecast
    reads only the samples before its moment."""

    STEP_S = 300.0

    def __init__(self, predictive, trace: Trace):
        from ..demand.forecast import Series

        self.p = predictive
        times, rates = trace.resample(10.0)
        per_step = int(self.STEP_S / 10.0)
        whole = len(rates) // per_step
        means = rates[:whole * per_step].reshape(whole, per_step).mean(axis=1)
        # The sample at (i + 1) * STEP_S is the rate over the 5 minutes before it, as rate(...[5m]).
        self.series = Series(self.STEP_S, self.STEP_S, [float(v) for v in means])
        self.next_at = -math.inf
        self.current = 0
        self.made: list[tuple[float, float | None]] = []  # (time, forecast peak)

    def floor(self, t: float, max_replicas: int) -> int:
        from ..demand.forecast import forecast_peak, predictive_floor

        if t >= self.next_at:
            self.next_at = t + self.p.refresh_s
            made = forecast_peak(self.series, t, self.p.lead_s + self.p.refresh_s,
                                 min_history_s=self.p.min_history_s)
            self.made.append((t, made.peak))
            self.current = predictive_floor(made.peak, self.p.per_replica_rps, max_replicas)
        return self.current


def _scale(pods: list[float], desired: int, t: float, startup_s: float) -> list[float]:
    if desired > len(pods):
        return pods + [t + startup_s] * (desired - len(pods))
    if desired < len(pods):
        # Not-ready pods go first, then the newest ready ones: keep the oldest.
        return sorted(pods)[:desired]
    return pods


def compare(trace: Trace, model: ServiceModel, policies: Iterable[Policy], *,
            progress: Callable[[str, float], None] | None = None, **kwargs) -> list[PolicyResult]:
    results = []
    for policy in policies:
        name = getattr(policy, "name", "policy")
        callback = (lambda f, name=name: progress(name, f)) if progress else None
        results.append(simulate(trace, model, policy, progress=callback, **kwargs))
    return results
