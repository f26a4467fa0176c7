"""plan.queueing, plan.simulate and plan.recommend on small cases and on the shipped trace."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from peakserve.api.spec import AutoscalingSpec
from peakserve.planner.hpa import Behavior
from peakserve.planner.policies import Floor, Hpa, Oracle, Scenario, Static
from peakserve.planner.queueing import ServiceModel, erlang_c
from peakserve.planner.recommend import recommend, recommended_lead_s
from peakserve.planner.simulate import Pipeline, compare, simulate
from peakserve.planner.trace import Trace, load

SHIPPED = Path(__file__).resolve().parents[2] / "traces" / "singles-day.csv"
DT = 5.0
STARTUP = 180.0


def step_trace(low=150.0, high=2000.0) -> Trace:
    """Two hours at one row per second: `low` requests/s, then `high` from 01:00 on."""
    t = np.arange(7200.0)
    return Trace(t, np.where(t < 3600.0, low, high), announced_s=3600.0)


def run_all(trace: Trace, model: ServiceModel, **kwargs):
    """The policies `peakserve plan` compares, with its defaults (floor from recommend())."""
    announced = trace.announced_s
    static = model.replicas_for(trace.peak_rps())
    rec = recommend(trace, model, announced_s=announced, startup_s=STARTUP, max_replicas=static, dt=DT)
    # The request-rate signal at 80% of capacity; the queue-time HPA at the recommended queue time.
    scenario = Scenario(1, math.ceil(static / 0.8), 0.8 * model.capacity_rps, Behavior.rendered(), (rec.floor(),),
                        queue_target=rec.target_us, predictive_per_replica=0.8 * model.capacity_rps)
    results = compare(trace, model, scenario.policies(static), startup_s=STARTUP, dt=DT,
                      step_window=(announced, announced + 3600.0), **kwargs)
    return rec, {r.name: r for r in results}


@pytest.fixture(scope="module")
def shipped():
    trace = load(SHIPPED)
    model = ServiceModel(200.0, batch_delay_us=100.0)
    return (trace, model) + run_all(trace, model)


# --- the latency model -----------------------------------------------------------------------

def test_erlang_c_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 4.5) == 1.0


@pytest.mark.parametrize("stat", ["p99", "mean"])
def test_capacity_is_where_the_slo_is_met_exactly(stat):
    model = ServiceModel(200.0, slo_ms=100.0, service_ms=20.0, concurrency=8, statistic=stat)
    assert model.latency_ms(200.0) == pytest.approx(100.0)
    assert model.latency_ms(190.0) < 100.0 < model.latency_ms(210.0)
    assert model.latency_ms(0.0) == pytest.approx(20.0)
    assert model.saturation_rps > 200.0
    waits = [model.queue_time_us(r) for r in (50, 100, 150, 200, 240)]
    assert waits == sorted(waits)
    assert model.utilization_for_queue_time(model.queue_time_at(0.75)) == pytest.approx(0.75, abs=1e-3)


def test_batch_delay_is_the_floor_of_the_queue_time_metric():
    model = ServiceModel(200.0, batch_delay_us=100.0)
    assert model.queue_time_us(1.0) == 100.0
    assert model.queue_time_us(200.0) > 5000.0
    assert model.latency_ms(1.0) == pytest.approx(20.0)  # not in the latency


# --- small simulations -----------------------------------------------------------------------

def test_enough_capacity_means_no_violations_for_any_policy():
    trace = load(SHIPPED)
    model = ServiceModel(100_000.0)
    _, results = run_all(trace, model)
    assert {name: r.violation_minutes for name, r in results.items()} == dict.fromkeys(results, 0)
    assert all(r.peak_replicas == 1 for r in results.values() if r.name != "reactive")


def test_static_too_small_violates_and_gpu_hours_count_every_pod():
    trace = step_trace()
    model = ServiceModel(200.0)
    small = simulate(trace, model, Static(3), dt=DT)
    assert small.violation_minutes == 60  # 2000 req/s on 3 replicas for the whole second hour
    assert small.gpu_hours == pytest.approx(3 * 2.0, rel=0.01)
    assert small.cost == pytest.approx(small.gpu_hours * 2.5)
    right = simulate(trace, model, Static(10), dt=DT)
    assert right.violation_minutes == 0


def test_oracle_serves_exactly_and_pays_for_startup():
    trace = step_trace()
    model = ServiceModel(200.0)
    oracle = simulate(trace, model, Oracle(), startup_s=STARTUP, dt=DT)
    assert oracle.violation_minutes == 0
    needed = np.array([model.replicas_for(r) for r in oracle.rps])
    assert np.all(oracle.ready >= needed)
    assert np.all(oracle.ready <= oracle.replicas)
    # The 9 extra pods of the second hour exist from 180 s before the step: start time is paid.
    assert oracle.gpu_hours == pytest.approx(2 * 1 + 9 * (1 + STARTUP / 3600), rel=0.01)
    assert oracle.replicas[oracle.times == 3600.0 - STARTUP][0] == 10


def test_reactive_hpa_lags_the_step_and_a_floor_with_lead_does_not():
    trace = step_trace()
    model = ServiceModel(200.0)
    behavior = Behavior.rendered()
    target = model.queue_time_at(0.75)
    alone = simulate(trace, model, Hpa(1, 20, target, behavior), startup_s=STARTUP, dt=DT,
                     step_window=(3600.0, 7200.0))
    assert alone.step_violation_minutes >= 3  # pipeline + start + load, then the backlog drains
    lead = recommended_lead_s(STARTUP, Pipeline())
    assert lead == 240
    floor = Floor(3600.0, 7200.0, 10, lead)
    planned = simulate(trace, model, Hpa(1, 20, target, behavior, (floor,)), startup_s=STARTUP, dt=DT,
                       step_window=(3600.0, 7200.0))
    assert planned.violation_minutes == 0
    at = planned.times
    assert np.all(planned.replicas[(at >= 3600.0 - lead + 15) & (at < 7200.0)] >= 10)
    assert np.all(planned.ready[(at >= 3600.0) & (at < 7200.0)] >= 10)
    late = simulate(trace, model, Hpa(1, 20, target, behavior, (Floor(3600.0, 7200.0, 10, 0.0),)),
                    startup_s=STARTUP, dt=DT, step_window=(3600.0, 7200.0))
    assert late.step_violation_minutes >= 3  # a floor without lead comes too late


def test_recommendation_on_a_step():
    trace = step_trace()
    model = ServiceModel(200.0)
    rec = recommend(trace, model, announced_s=3600.0, startup_s=STARTUP, max_replicas=20, dt=DT)
    assert rec.min_replicas == 10  # 2000 / 200
    assert rec.lead_s == 240
    assert rec.tried[10] == 0 and all(v > 0 for k, v in rec.tried.items() if k < 10)
    assert rec.target_us <= model.queue_time_at(0.75) < rec.target_us * 1.1
    assert any("lead time" in line for line in rec.reasoning)


# --- the shipped Singles' Day trace ----------------------------------------------------------

def test_shipped_static_and_oracle_bracket_the_others(shipped):
    _, _, _, results = shipped
    static, oracle = results["static"], results["oracle"]
    assert static.violation_minutes == 0 and oracle.violation_minutes == 0
    # Triton's example runs at maxReplicas (above the static peak) all day behind the batcher's delay.
    assert static.gpu_hours == max(r.gpu_hours for r in results.values() if r.name != "reactive")
    assert oracle.gpu_hours == min(r.gpu_hours for r in results.values())
    assert static.peak_replicas == 36  # ceil(7196 / 200)


def test_shipped_schedule_meets_the_step_with_far_fewer_gpu_hours(shipped):
    _, _, rec, results = shipped
    schedule, metric, static = results["schedule"], results["signal"], results["static"]
    assert rec.min_replicas == 36 and rec.lead_s == 240
    assert schedule.step_violation_minutes == 0
    assert schedule.gpu_hours < 0.25 * static.gpu_hours  # ~190 vs 864
    assert schedule.gpu_hours < 0.75 * results["queue"].gpu_hours  # the queue-time HPA saws above demand
    assert metric.step_violation_minutes >= 8  # the same HPA without the schedule: ~11 minutes
    # What is left is the unannounced flash spike at 11:00 (19 h into the trace) and the 4 minutes to serve it.
    assert all(19 * 60 <= m < 19 * 60 + 10 for m in schedule.violated_minutes(100.0))
    assert schedule.violation_minutes + 5 <= metric.violation_minutes


def test_shipped_triton_example_target_never_scales_down_behind_the_batcher(shipped):
    # 50 us is below the 100 us the dynamic batcher adds to every request's queue time.
    _, _, _, results = shipped
    reactive, static = results["reactive"], results["static"]
    assert reactive.gpu_hours >= 0.99 * static.gpu_hours
    assert reactive.step_violation_minutes == 0


def test_shipped_triton_example_flaps_without_the_batcher():
    trace = load(SHIPPED)
    _, results = run_all(trace, ServiceModel(200.0, batch_delay_us=0.0))
    reactive, schedule = results["reactive"], results["schedule"]
    assert reactive.violation_minutes >= 300  # drops to minReplicas every ~10 min, overloads
    assert reactive.violation_minutes >= 20 * max(schedule.violation_minutes, 1)
    assert schedule.step_violation_minutes == 0


def test_the_specs_scale_down_reaches_the_simulation():
    """After the step the load falls back: a faster scaleDown in the spec, through the behavior the
    operator renders, returns replicas sooner and saves GPU-hours."""
    t = np.arange(7200.0)
    trace = Trace(t, np.where(t < 3600.0, 2000.0, 150.0))
    model = ServiceModel(200.0)
    target = model.queue_time_at(0.75)

    def run(scale_down: dict):
        spec = AutoscalingSpec.model_validate({"maxReplicas": 20, "scaleDown": scale_down})
        return simulate(trace, model, Hpa(1, 20, target, Behavior.rendered(spec)), startup_s=STARTUP, dt=DT)

    def back_to_one(result) -> float:
        return float(result.times[(result.times >= 3600.0) & (result.replicas == 1)][0]) - 3600.0

    default, fast = run({}), run({"stabilizationWindowSeconds": 0, "maxPods": 10, "periodSeconds": 15})
    assert default.replicas.max() >= 10 and fast.replicas.max() >= 10
    assert back_to_one(fast) + 300.0 <= back_to_one(default)  # the default waits out its 300 s window
    assert fast.gpu_hours < default.gpu_hours
