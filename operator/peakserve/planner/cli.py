"""`peakserve plan`: capacity planning, by simulating the autoscaler under a traffic trace.

Compares the ways to run the model through the trace: static peak provisioning, Triton's example HPA
(queue time, 50 us, no behavior), an HPA on queue time (peakserve's earlier default), the capacity-
proportional signal (request rate per pod at targetUtilization of the capacity) alone, with the promotion
schedule, and with the schedule plus the predictive floor (peakserve's default), and an oracle with perfect
foresight. Prints SLO-violation minutes, GPU-hours (and their multiple of the oracle's), cost and peak
replicas for each. With an announced promotion (the trace's `# announced:` line or --announced) it also
recommends the schedule's floor (minReplicas) and lead time. With --out DIR it writes plan.json and plan.png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..api.spec import CAPACITY_METRICS

DEFAULT_TRACE = "traces/singles-day.csv"
DEFAULT_CAPACITY_RPS = 200.0
DEFAULT_STARTUP_S = 180.0
DEFAULT_UTILIZATION = 80   # percent: the spec's default targetUtilization
PREDICTIVE_REFRESH_S = 300.0
# What the recommended policy should reach on any realistic trace (issue 11).
GOAL_RATIO = 1.3
GOAL_VIOLATION_MINUTES = 10
UNITS = {"queueTime": "us", "pendingRequests": "requests", "gpuUtilization": "%", "requestRate": "requests/s",
         "concurrency": "requests in flight"}


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `plan` on an argparse subparsers object; the command runs main(args)."""
    p = sub.add_parser("plan", help="plan replicas for a promotion: simulate the HPA under a traffic trace",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", metavar="CSV", default=DEFAULT_TRACE,
                   help=f"traffic trace (minute|second,requests_per_second; default {DEFAULT_TRACE})")
    p.add_argument("--capacity", metavar="RPS", type=float, default=None,
                   help="requests/s one replica serves within the SLO, as `peakserve bench` measures "
                        f"(default: the spec's capacity.requestsPerSecond, else {DEFAULT_CAPACITY_RPS:g})")
    p.add_argument("--target-utilization", metavar="PERCENT", type=float, default=None,
                   help="percent of capacity the request-rate signal aims at "
                        f"(default: the spec's targetUtilization, else {DEFAULT_UTILIZATION})")
    p.add_argument("--history-days", metavar="DAYS", default="auto",
                   help="leading days of the trace that only serve as history (Prometheus already holds them): "
                        "counted for no policy; auto: the predictive floor's minHistoryHours (25 h) for a trace of "
                        "3 days or more, else 0")
    p.add_argument("--startup", metavar="SECONDS", type=float, default=DEFAULT_STARTUP_S,
                   help="seconds from a scale-up decision to the new pod serving: scheduling, image pull, "
                        f"model load (default {DEFAULT_STARTUP_S:g})")
    p.add_argument("-f", "--file", metavar="MD.yaml",
                   help="a ModelDeployment: spec.autoscaling (bounds, target, scaleUp/scaleDown, schedules, "
                        "leadTimeSeconds) and spec.serving.dynamicBatching are used")
    p.add_argument("--slo-ms", type=float, default=100.0, help="latency SLO in ms (default 100)")
    p.add_argument("--slo-stat", choices=["p99", "mean"], default="p99",
                   help="which latency the SLO bounds (default p99)")
    p.add_argument("--service-ms", type=float, default=20.0,
                   help="latency of a request that does not wait, ms (default 20)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="parallel slots per replica in the M/M/c model (default 8)")
    p.add_argument("--batch-delay-us", type=float, default=None,
                   help="queue time Triton reports when idle: the dynamic batcher's delay "
                        "(default: the spec's maxQueueDelayMicroseconds, 100 without -f; 0 if batching is off)")
    p.add_argument("--target-us", type=float, default=None,
                   help="target of the queue-time policy (default: the spec's with -f and a queue metric, else the queue "
                        "time at 75%% of capacity)")
    p.add_argument("--gpu-hour-cost", type=float, default=2.5, help="$ per GPU-hour (default 2.5)")
    p.add_argument("--announced", metavar="START",
                   help="announced promotion start: ISO time, HH:MM, or minutes from the trace start "
                        "(default: the trace's `# announced:` line)")
    p.add_argument("--hold-minutes", type=float, default=60.0,
                   help="how long the recommended floor holds after the start (default 60)")
    p.add_argument("--dt", type=float, default=1.0, help="simulation step in seconds (default 1)")
    p.add_argument("--out", metavar="DIR", help="write plan.json and plan.png here")
    p.add_argument("--progress", action="store_true", help="show simulation progress on stderr")
    p.set_defaults(func=main)
    return p


class PlanError(Exception):
    pass


def _find_trace(path: str) -> Path:
    given = Path(path)
    if given.exists():
        return given
    if path == DEFAULT_TRACE:  # run from elsewhere than the repository root
        shipped = Path(__file__).resolve().parents[3] / DEFAULT_TRACE
        if shipped.exists():
            return shipped
    raise PlanError(f"trace not found: {path}")


def _read_spec(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        documents = [d for d in yaml.load_all(text, Loader=_kubectl_loader()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as err:
        raise PlanError(f"cannot read {path}: {err}") from None
    bodies = [d for d in documents if d.get("kind") == "ModelDeployment"] or documents
    if not bodies:
        raise PlanError(f"{path}: no YAML mapping found")
    body = bodies[0]
    spec = body.get("spec", body)
    if not isinstance(spec, dict):
        raise PlanError(f"{path}: spec is not a mapping")
    return spec


def _kubectl_loader():
    """A YAML loader that reads times as kubectl does: an unquoted `start: 2025-11-11T00:00:00` stays a string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return Loader


def _autoscaling(spec: dict[str, Any]):
    """spec.autoscaling (None when the spec has none), refused where the CRD or the operator would refuse it
    (api/validation.parse_autoscaling)."""
    from ..api.validation import InvalidSpec, parse_autoscaling

    raw = spec.get("autoscaling")
    if raw is None:
        return None
    try:
        return parse_autoscaling(raw)
    except InvalidSpec as err:
        hint = ("; a schedule's start and end are local times YYYY-MM-DDTHH:MM:SS, without an offset, in its "
                "timezone" if re.search(r"\.schedules\.\d+\.(start|end):", str(err)) else "")
        raise PlanError(f"{err}{hint}") from None


def _batch_delay(spec: dict[str, Any] | None) -> float:
    from ..api.spec import DynamicBatching

    raw = ((spec or {}).get("serving") or {}).get("dynamicBatching") or {}
    batching = DynamicBatching.model_validate(raw)
    return float(batching.max_queue_delay_microseconds) if batching.enabled else 0.0


def _schedule_floors(trace, autoscaling, startup_s: float):
    """The floors the operator raises for spec.autoscaling.schedules (api/schedules.window()), as offsets
    from the trace start: from start - lead until end. The lead time is the operator's too: the spec's,
    else the pod start (there measured, here `startup_s`) plus the metric delay."""
    from ..api.schedules import lead_time, window
    from .policies import Floor

    if trace.start is None:
        raise PlanError("spec.autoscaling.schedules: the trace has no `# start:` line to place their times on")
    lead = timedelta(seconds=lead_time(autoscaling, math.ceil(startup_s)))
    floors = []
    for schedule in autoscaling.schedules:
        w = window(schedule, lead)  # parse_autoscaling refused dates that do not exist
        floors.append(Floor(trace.offset_at(w.start), trace.offset_at(w.end), w.min_replicas,
                            (w.start - w.raise_at).total_seconds(), w.name))
    return tuple(floors)


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = ""

    def __call__(self, name: str, fraction: float) -> None:
        if not self.enabled:
            return
        line = f"simulating {name:<9} {'#' * int(fraction * 30):<30} {int(fraction * 100):3d}%"
        if line != self.last:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
            self.last = line
        if fraction >= 1.0:
            sys.stderr.write("\n")
            self.last = ""


def _ranges(minutes: list[int], trace, limit: int = 6) -> str:
    if not minutes:
        return "none"
    spans, first, prev = [], minutes[0], minutes[0]
    for m in minutes[1:] + [None]:
        if m is not None and m == prev + 1:
            prev = m
            continue
        def label(x):
            moment = trace.at(x * 60.0)
            return moment.strftime("%H:%M") if moment else f"min {x}"
        spans.append(label(first) if first == prev else f"{label(first)}-{label(prev + 1)}")
        if m is not None:
            first = prev = m
    shown = spans[:limit]
    more = f" and {len(spans) - limit} more episodes" if len(spans) > limit else ""
    return ", ".join(shown) + more


def main(args: argparse.Namespace) -> int:
    try:
        return _plan(args)
    except PlanError as err:
        print(f"peakserve plan: {err}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    import numpy as np

    from .hpa import Behavior
    from .plot import plot
    from .policies import TRITON_EXAMPLE_TARGET_US, Scenario
    from .queueing import ServiceModel
    from .recommend import recommend, recommended_lead_s, recommended_target_us, schedule_yaml
    from .simulate import Pipeline, compare
    from .trace import load

    try:
        trace = load(_find_trace(args.trace))
    except (OSError, ValueError) as err:
        raise PlanError(f"{args.trace}: {err}") from None
    spec = _read_spec(args.file) if args.file else None
    autoscaling = _autoscaling(spec) if spec else None
    batch_delay = args.batch_delay_us if args.batch_delay_us is not None else _batch_delay(spec)
    spec_capacity = autoscaling.capacity.requests_per_second if autoscaling else None
    capacity = args.capacity if args.capacity is not None else (spec_capacity or DEFAULT_CAPACITY_RPS)
    try:
        model = ServiceModel(capacity, slo_ms=args.slo_ms, service_ms=args.service_ms,
                             concurrency=args.concurrency, statistic=args.slo_stat, batch_delay_us=batch_delay)
    except ValueError as err:
        raise PlanError(str(err)) from None
    if args.dt <= 0 or args.startup < 0:
        raise PlanError("--dt must be > 0 and --startup >= 0")
    try:
        announced = trace.offset_of(args.announced) if args.announced else trace.announced_s
    except ValueError as err:
        raise PlanError(f"--announced: {err}") from None
    min_history_s = autoscaling.predictive.min_history_hours * 3600.0 if autoscaling else 25 * 3600.0
    history_s = _history_seconds(args.history_days, trace, min_history_s)
    if history_s >= trace.duration_s:
        raise PlanError(f"--history-days {args.history_days}: the trace lasts {trace.duration_s / 86400:g} days")
    span = (history_s, trace.duration_s)

    pipeline = Pipeline()
    static_replicas = model.replicas_for(trace.rate_at(np.arange(*span, 60.0)).max())
    utilization = (args.target_utilization if args.target_utilization is not None else
                   autoscaling.target_utilization if autoscaling else DEFAULT_UTILIZATION) / 100.0
    behavior = Behavior.rendered(autoscaling)
    if autoscaling:
        min_r, max_r = autoscaling.min_replicas, autoscaling.max_replicas
    else:
        min_r, max_r = 1, math.ceil(static_replicas / utilization)
    signal = autoscaling.metric if autoscaling and autoscaling.metric in CAPACITY_METRICS else "requestRate"
    old_metric = autoscaling.metric if autoscaling and autoscaling.metric not in CAPACITY_METRICS else "queueTime"
    old_target = args.target_us if args.target_us is not None else (
        float(autoscaling.target_value()) if autoscaling and autoscaling.metric not in CAPACITY_METRICS
        else recommended_target_us(model))
    signal_target = utilization * (model.capacity_rps if signal == "requestRate"
                                   else model.in_flight(model.capacity_rps))
    lead_s = (autoscaling.lead_time_seconds if autoscaling and autoscaling.lead_time_seconds is not None
              else recommended_lead_s(args.startup, pipeline))
    floors = _schedule_floors(trace, autoscaling, args.startup) if autoscaling and autoscaling.schedules else ()

    rec = None
    if announced is not None:
        rec = recommend(trace, model, announced_s=announced, startup_s=args.startup, pipeline=pipeline,
                        hold_s=args.hold_minutes * 60.0, min_replicas=min_r, max_replicas=max_r,
                        target=signal_target, metric=signal, behavior=behavior, dt=args.dt)
    if floors:
        floor_source = f"{len(floors)} window(s) from spec.autoscaling.schedules"
    elif rec:
        floors = (rec.floor(),)
        floor_source = "the recommended floor below"
    else:
        floor_source = "none (no announced promotion)"
    scenario = Scenario(min_r, max_r, signal_target, behavior, floors, signal, old_metric, old_target,
                        predictive_per_replica=utilization * model.capacity_rps, lead_s=lead_s,
                        min_history_s=min_history_s)
    progress = _Progress(args.progress)
    results = compare(trace, model, scenario.policies(static_replicas), progress=progress,
                      startup_s=args.startup, pipeline=pipeline, dt=args.dt, gpu_hour_cost=args.gpu_hour_cost,
                      span=span, step_window=(announced, announced + 3600.0) if announced is not None else None)
    by_name = {r.name: r for r in results}
    oracle_hours = by_name["oracle"].gpu_hours
    recommended = by_name[scenario.recommended]

    print(f"trace {args.trace}: {trace.duration_s / 3600:g} h, peak {trace.peak_rps():.0f} requests/s, "
          f"announced start {_label(trace, announced) if announced is not None else 'none'}"
          + (f"; the first {history_s / 86400:g} day(s) are history only (not counted)" if history_s else ""))
    print(f"model: {model.capacity_rps:g} requests/s per replica at {model.statistic} <= {model.slo_ms:g} ms "
          f"(service {model.service_ms:g} ms, {model.concurrency} slots, saturation "
          f"{model.saturation_rps:.0f} requests/s); startup {args.startup:g} s; idle queue time "
          f"{model.batch_delay_us:g} us; ${args.gpu_hour_cost:g}/GPU-hour")
    source = ("spec.autoscaling" if autoscaling else
              "planner defaults (no spec.autoscaling)" if spec else "planner defaults")
    print(f"HPA ({source}): minReplicas {min_r}, maxReplicas {max_r}; {signal} at {utilization:.0%} of capacity "
          f"({signal_target:g} {UNITS[signal]} per pod); {old_metric} target {old_target:g} {UNITS[old_metric]}; "
          f"Triton example {TRITON_EXAMPLE_TARGET_US:g} us; floors: {floor_source}; predictive floor over "
          f"{lead_s + PREDICTIVE_REFRESH_S:g} s windows")
    print()
    header = (f"{'policy':<58} {'SLO-viol. min':>13} {'at step':>8} {'GPU-hours':>10} {'x oracle':>9} "
              f"{'cost $':>10} {'peak':>5}")
    print(header)
    print("-" * len(header))
    for r in results:
        mark = "*" if r is recommended else " "
        print(f"{mark}{r.label:<57} {r.violation_minutes:>13} {r.step_violation_minutes:>8} {r.gpu_hours:>10.1f} "
              f"{r.gpu_hours / oracle_hours:>8.2f}x {r.cost:>10.2f} {r.peak_replicas:>5}")
    print("('*': peakserve's default, recommended; 'at step': violation minutes in the hour after the announced "
          "start; 'peak': most replicas at once)")
    print()
    for r in results:
        if r.violation_minutes:
            print(f"{r.name}: over the SLO at {_ranges(r.violated_minutes(model.slo_ms), trace)}")
    ratio = recommended.gpu_hours / oracle_hours
    met = ratio <= GOAL_RATIO and recommended.violation_minutes <= GOAL_VIOLATION_MINUTES
    print(f"\nrecommended policy: {recommended.label}: {ratio:.2f}x the oracle's GPU-hours, "
          f"{recommended.violation_minutes} violation minutes (goal <= {GOAL_RATIO:g}x and <= "
          f"{GOAL_VIOLATION_MINUTES} minutes: {'met' if met else 'NOT met'})")
    mape = _mape(recommended, trace)
    if mape is not None:
        print(f"forecast error: MAPE {mape:.1f}% of the windows' peak rate ({len(recommended.forecasts)} forecasts)")
    print()
    notes = _notes(model, results, old_target, old_metric, static_replicas, max_r)
    for note in notes:
        print(f"note: {note}")
    if rec:
        print()
        print(f"recommendation: minReplicas {rec.min_replicas} from {rec.lead_s // 60} min before the announced "
              f"start, held {args.hold_minutes:g} min")
        for line in rec.reasoning:
            print(f"  - {line}")
        print(schedule_yaml(rec, trace))

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        document = {
            "trace": {"path": str(args.trace), "start": trace.start.isoformat() if trace.start else None,
                      "durationSeconds": trace.duration_s, "peakRps": trace.peak_rps(),
                      "announcedOffsetSeconds": announced, "historySeconds": history_s},
            "model": {"capacityRps": model.capacity_rps, "sloMs": model.slo_ms, "sloStatistic": model.statistic,
                      "serviceMs": model.service_ms, "concurrency": model.concurrency,
                      "saturationRps": model.saturation_rps, "batchDelayUs": model.batch_delay_us},
            "startupSeconds": args.startup, "gpuHourCost": args.gpu_hour_cost, "dtSeconds": args.dt,
            "pipeline": {"scrapeIntervalSeconds": pipeline.scrape_interval_s,
                         "rateWindowSeconds": pipeline.rate_window_s,
                         "adapterRelistSeconds": pipeline.adapter_relist_s, "hpaSyncSeconds": pipeline.hpa_sync_s},
            "hpa": {"minReplicas": min_r, "maxReplicas": max_r, "metric": signal, "target": signal_target,
                    "targetUtilization": utilization, "queueMetric": old_metric, "queueTarget": old_target,
                    "floors": [{"name": f.name, "startOffsetSeconds": f.start_s, "endOffsetSeconds": f.end_s,
                                "minReplicas": f.min_replicas, "leadSeconds": f.lead_s} for f in floors]},
            "results": [{**r.summary(), "oracleRatio": round(r.gpu_hours / oracle_hours, 3)} for r in results],
            "recommended": {"policy": recommended.name, "oracleRatio": round(ratio, 3),
                            "sloViolationMinutes": recommended.violation_minutes, "goalMet": met,
                            "forecastMapePercent": None if mape is None else round(mape, 1)},
            "recommendation": rec.summary() if rec else None,
            "notes": notes,
            "perMinute": {r.name: r.per_minute() for r in results},
        }
        (out / "plan.json").write_text(_json(document) + "\n")
        plot(out / "plan.png", trace, results, slo_ms=model.slo_ms, announced_s=announced,
             title=f"peakserve plan: {Path(args.trace).name}, {model.capacity_rps:g} req/s per replica, "
                   f"startup {args.startup:g} s, {model.statistic} SLO {model.slo_ms:g} ms")
        print(f"\nwrote {out / 'plan.json'} and {out / 'plan.png'}")
    return 0


def _history_seconds(days: str, trace, min_history_s: float) -> float:
    """--history-days: 'auto' takes the history the predictive floor needs (25 h by default) from the start of
    a trace of three days or more as history only (a Prometheus that already holds it, as an operator that
    has run a while has); shorter traces are counted whole."""
    if days == "auto":
        return min_history_s if trace.duration_s >= 3 * 86400 else 0.0
    try:
        value = float(days)
    except ValueError:
        raise PlanError(f"--history-days: expected a number of days or auto, got {days!r}") from None
    if value < 0:
        raise PlanError("--history-days must be >= 0")
    return value * 86400.0


def _mape(result, trace) -> float | None:
    """Mean absolute percentage error of the forecasts made (peak of each window) against the peak that came."""
    import numpy as np

    errors = []
    for t, peak in result.forecasts:
        actual = float(trace.rate_at(np.arange(t, t + result.forecast_window_s, 60.0)).max())
        if actual > 0:
            errors.append(abs(peak - actual) / actual)
    return 100.0 * sum(errors) / len(errors) if errors else None


def _json(document: dict) -> str:
    """Indented JSON with every list of numbers on one line (the per-minute series)."""
    placeholders: dict[str, str] = {}

    def compact(value):
        if isinstance(value, dict):
            return {k: compact(v) for k, v in value.items()}
        if isinstance(value, list) and value and all(isinstance(x, (int, float)) for x in value):
            key = f"@@{len(placeholders)}@@"
            placeholders[key] = json.dumps(value, separators=(",", ":"))
            return key
        if isinstance(value, list):
            return [compact(v) for v in value]
        return value

    text = json.dumps(compact(document), indent=1)
    for key, inline in placeholders.items():
        text = text.replace(f'"{key}"', inline)
    return text


def _label(trace, offset_s: float) -> str:
    moment = trace.at(offset_s)
    return moment.isoformat(timespec="minutes") if moment else f"minute {offset_s / 60:g}"


def _notes(model, results, target: float, metric: str, static_replicas: int, max_replicas: int) -> list[str]:
    from .policies import TRITON_EXAMPLE_TARGET_US

    notes = []
    by_name = {r.name: r for r in results}
    if model.batch_delay_us > TRITON_EXAMPLE_TARGET_US * 1.1:
        notes.append(f"Triton's example target ({TRITON_EXAMPLE_TARGET_US:g} us) is below the queue time an idle "
                     f"server reports ({model.batch_delay_us:g} us, the dynamic batcher's delay): that HPA never "
                     f"scales down and runs at maxReplicas ({max_replicas}) all day")
    if metric == "queueTime" and target > model.queue_time_at(1.0):
        notes.append(f"the queueTime target {target:g} us is above the queue time at capacity "
                     f"({model.queue_time_at(1.0):.0f} us): the HPA settles near "
                     f"{model.utilization_for_queue_time(target):.0%} of capacity, past the SLO")
    reactive = by_name.get("reactive")
    if reactive and reactive.violation_minutes > 60:
        notes.append("the reactive HPA flaps: once queues empty, the metric reads ~0 and the legacy path drops "
                     "to minReplicas after its 300 s window, overloads, and scales back up")
    if max_replicas < static_replicas:
        notes.append(f"maxReplicas {max_replicas} is below the {static_replicas} replicas the trace's peak needs")
    return notes
