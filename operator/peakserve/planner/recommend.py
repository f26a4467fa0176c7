"""What to put in the promotion schedule: the replica floor, its lead time, a metric target.

* Lead time = pod start + model load + metrics pipeline delay (a scrape, an adapter relist,
  an HPA sync), rounded up to a whole minute: the floor must be raised that long before the
  announced start for its pods to serve at the start.
* Floor (minReplicas) = the smallest floor for which the simulated schedule + metric HPA has
  no SLO-violation minute around the step (from the floor's rise to an hour after the start).
  The first guess is the peak rate of that hour divided by the per-replica capacity; the
  simulation then tries smaller floors (bisection), since the metric HPA may add the rest.
* Metric target (queueTime) = the mean queue time when every replica runs at
  TARGET_UTILIZATION of its capacity, rounded down to two significant digits. The HPA settles
  where the metric is near the target, so a target above the queue time at capacity keeps
  replicas past the SLO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .hpa import Behavior
from .policies import Floor, Hpa
from .queueing import ServiceModel
from .simulate import Pipeline, simulate
from .trace import Trace

TARGET_UTILIZATION = 0.75
STEP_HORIZON_S = 3600.0


def round_down_2sig(value: float) -> float:
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.floor(value / scale) * scale


def recommended_lead_s(startup_s: float, pipeline: Pipeline) -> int:
    return int(math.ceil((startup_s + pipeline.delay_s) / 60.0) * 60)


def recommended_target_us(model: ServiceModel, utilization: float = TARGET_UTILIZATION) -> float:
    return round_down_2sig(model.queue_time_at(utilization))


@dataclass
class Recommendation:
    min_replicas: int
    lead_s: int
    target_us: float
    announced_s: float
    hold_s: float
    peak_rps: float
    first_guess: int
    tried: dict[int, int] = field(default_factory=dict)  # floor -> violation minutes at the step
    reasoning: list[str] = field(default_factory=list)

    def floor(self) -> Floor:
        return Floor(self.announced_s, self.announced_s + self.hold_s, self.min_replicas, self.lead_s)

    def summary(self) -> dict:
        return {"minReplicas": self.min_replicas, "leadTimeSeconds": self.lead_s,
                "queueTimeTargetUs": self.target_us, "announcedOffsetSeconds": self.announced_s,
                "holdSeconds": self.hold_s, "peakRps": round(self.peak_rps, 1),
                "firstGuess": self.first_guess,
                "triedFloors": {str(k): v for k, v in sorted(self.tried.items())},
                "reasoning": self.reasoning}


def recommend(trace: Trace, model: ServiceModel, *, announced_s: float, startup_s: float,
              pipeline: Pipeline = Pipeline(), hold_s: float = 7200.0, min_replicas: int = 1,
              max_replicas: int | None = None, target: float | None = None, metric: str = "queueTime",
              behavior: Behavior | None = None, dt: float = 5.0) -> Recommendation:
    """The floor and lead time for the announced step, checked by simulation."""
    behavior = behavior or Behavior.rendered()
    lead_s = recommended_lead_s(startup_s, pipeline)
    target_us = recommended_target_us(model)
    hpa_target = target if target is not None else target_us
    horizon = (announced_s, min(announced_s + STEP_HORIZON_S, trace.duration_s))
    times, rates = trace.resample(dt)
    in_step = (times >= horizon[0]) & (times < horizon[1])
    peak = float(rates[in_step].max()) if in_step.any() else float(trace.rate_at(announced_s))
    first_guess = model.replicas_for(peak)
    ceiling = max(max_replicas or first_guess, first_guess)
    span = (max(announced_s - lead_s - 600.0, 0.0), horizon[1])
    window = (announced_s - lead_s, horizon[1])
    tried: dict[int, int] = {}

    def violations(floor: int) -> int:
        if floor not in tried:
            policy = Hpa(min_replicas, ceiling, hpa_target, behavior,
                         (Floor(announced_s, announced_s + hold_s, floor, lead_s),), metric=metric)
            result = simulate(trace, model, policy, startup_s=startup_s, pipeline=pipeline, dt=dt,
                              span=span, step_window=window)
            tried[floor] = result.step_violation_minutes
        return tried[floor]

    best = first_guess
    while violations(best) > 0 and best < 2 * first_guess:
        best += max(1, first_guess // 10)
    lo, hi = max(min_replicas, 1), best  # hi: no violations (or the best we found)
    if violations(hi) == 0:
        while lo < hi:
            mid = (lo + hi) // 2
            if violations(mid) == 0:
                hi = mid
            else:
                lo = mid + 1
        best = hi

    start_label = _when(trace, announced_s)
    rise_label = _when(trace, announced_s - lead_s)
    reasoning = [
        f"peak in the hour after the announced start ({start_label}): {peak:.0f} requests/s; at "
        f"{model.capacity_rps:g} requests/s per replica (capacity at the SLO) that is {first_guess} replicas",
        "simulated floors (violation minutes around the step): "
        + ", ".join(f"{k} -> {v}" for k, v in sorted(tried.items(), reverse=True))
        + f"; the smallest without violations is {best}"
        + ("" if tried.get(best, 1) == 0 else " (none was free of violations: the best found)"),
        f"lead time: pod start + model load {startup_s:g} s + metrics pipeline {pipeline.delay_s:g} s "
        f"(scrape {pipeline.scrape_interval_s:g} + adapter relist {pipeline.adapter_relist_s:g} + HPA sync "
        f"{pipeline.hpa_sync_s:g}) = {startup_s + pipeline.delay_s:g} s, rounded up to {lead_s // 60} min: "
        f"raise the floor at {rise_label}",
    ]
    if metric == "queueTime":
        reasoning.append(f"queueTime target: the mean queue time at {TARGET_UTILIZATION:.0%} of capacity is "
                         f"{model.queue_time_at(TARGET_UTILIZATION):.0f} us -> {target_us:g} us; at capacity it "
                         f"is {model.queue_time_at(1.0):.0f} us")
    else:
        reasoning.append(f"simulated with the {metric} HPA at {hpa_target:g} per pod, the floor's rise and hold "
                         f"included")
    if metric == "queueTime" and target is not None and target > model.queue_time_at(1.0):
        reasoning.append(
            f"warning: the spec's target {target:g} us is above the queue time at capacity: the HPA "
            f"settles near {model.utilization_for_queue_time(target):.0%} of capacity, past the SLO")
    return Recommendation(best, lead_s, target_us, announced_s, hold_s, peak, first_guess, tried, reasoning)


def _when(trace: Trace, offset_s: float) -> str:
    moment = trace.at(offset_s)
    if moment is None:
        return f"minute {offset_s / 60:g}"
    return moment.isoformat(timespec="minutes")


def schedule_yaml(rec: Recommendation, trace: Trace, name: str = "promotion", timezone: str | None = None) -> str:
    """The autoscaling.schedules snippet for this recommendation, in the CRD's form: local times without
    an offset, plus an IANA time zone (a fixed offset is written as Etc/GMT-N, whose sign is inverted)."""
    start, end = trace.at(rec.announced_s), trace.at(rec.announced_s + rec.hold_s)
    local = (lambda d: d.replace(tzinfo=None).isoformat(timespec="seconds")) if start else (lambda d: d)
    start_s = local(start) if start else f"minute {rec.announced_s / 60:g}"
    end_s = local(end) if end else f"minute {(rec.announced_s + rec.hold_s) / 60:g}"
    if timezone is None and start is not None:
        hours = int(start.utcoffset().total_seconds() // 3600)
        timezone = "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    lines = ["autoscaling:", f"  leadTimeSeconds: {rec.lead_s}", "  schedules:",
             f"    - name: {name}", f'      start: "{start_s}"', f'      end: "{end_s}"']
    if timezone:
        lines.append(f"      timezone: {timezone}")
    lines.append(f"      minReplicas: {rec.min_replicas}")
    return "\n".join(lines)
