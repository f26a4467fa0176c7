"""plan.hpa against the documented HPA algorithm and the controller's behavior logic."""

from __future__ import annotations

import pytest

from peakserve.api.spec import AutoscalingSpec
from peakserve.planner.hpa import (Behavior, HpaState, ScalingPolicy, ScalingRules, desired_replicas,
                                pods_metric_replicas, scale_down_limit, scale_up_limit)
from peakserve.render.autoscaler import behavior, render_hpa
from peakserve.render.owner import Owner

PEAKSERVE = Behavior.rendered()  # render/autoscaler.py, default spec: SCALE_UP / SCALE_DOWN, Max up, Min down


def no_window(behavior: Behavior = PEAKSERVE) -> Behavior:
    """The same policies without stabilization windows, to test the arithmetic in one step."""
    up, down = behavior.scale_up, behavior.scale_down
    return Behavior(ScalingRules(0, up.select_policy, up.policies), ScalingRules(0, down.select_policy, down.policies))


def test_documented_example_doubles_and_halves():
    # kubernetes.io: currentMetricValue 200m, desiredMetricValue 100m -> double; 50m -> halve.
    assert desired_replicas(4, 0.200, 0.100) == 8
    assert desired_replicas(4, 0.050, 0.100) == 2
    assert desired_replicas(3, 0.050, 0.100) == 2  # ceil(1.5)
    hpa = HpaState(1, 100, 100.0, no_window())
    assert hpa.step(0.0, 4, 200.0) == 8
    hpa = HpaState(1, 100, 100.0, no_window())
    assert hpa.step(0.0, 4, 50.0) == 3  # the -1 pod / 10% per 60 s policy (Min) allows only one pod


def test_tolerance_band_is_ten_percent_either_way():
    assert desired_replicas(10, 105.0, 100.0) == 10
    assert desired_replicas(10, 95.0, 100.0) == 10
    assert desired_replicas(10, 109.0, 100.0) == 10
    # Exactly 10% over is out: in floating point |1.1 - 1| = 0.10000000000000009 > 0.1, and the
    # controller compares the same float64 values.
    assert desired_replicas(10, 110.0, 100.0) == 11
    assert desired_replicas(10, 111.0, 100.0) == 12  # ceil(11.1)
    assert desired_replicas(10, 89.0, 100.0) == 9  # ceil(8.9)
    assert HpaState(1, 100, 100.0, no_window()).step(0.0, 10, 105.0) == 10


def test_min_and_max_clamp():
    hpa = HpaState(2, 10, 100.0, no_window())
    assert hpa.step(0.0, 5, 1000.0) == 10  # wanted 50, policies allow 10, maxReplicas 10
    hpa = HpaState(2, 10, 100.0, Behavior.kubernetes_defaults())
    assert hpa.step(0.0, 3, 1.0) == 3  # 300 s window: no scale-down yet
    assert hpa.step(300.0, 3, 1.0) == 2  # minReplicas
    # Outside the bounds the controller sets the bound directly, without any policy.
    assert HpaState(2, 10, 100.0, PEAKSERVE).step(0.0, 40, 1.0) == 10
    assert HpaState(12, 40, 100.0, PEAKSERVE).step(0.0, 1, 1.0) == 12
    # spec.replicas 0 with minReplicas > 0: scaling disabled.
    assert HpaState(1, 10, 100.0, PEAKSERVE).step(0.0, 0, 500.0) == 0


def test_scale_up_limit_four_pods_or_double_per_15s():
    up = PEAKSERVE.scale_up
    assert up.select_policy == "Max"
    assert scale_up_limit(2, up) == 6  # max(2 + 4, 2 * 2)
    assert scale_up_limit(10, up) == 20  # max(10 + 4, 10 * 2)
    assert scale_up_limit(1, up) == 5
    hpa = HpaState(1, 1000, 100.0, PEAKSERVE)
    assert hpa.step(0.0, 2, 10_000.0) == 6
    assert hpa.step(15.0, 6, 10_000.0) == 12  # the event at t=0 is not after 15 - 15
    assert hpa.step(30.0, 12, 10_000.0) == 24


def test_two_scale_ups_in_one_period_share_the_limit():
    slow = Behavior(ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 60),)), PEAKSERVE.scale_down)
    hpa = HpaState(1, 100, 100.0, slow)
    assert hpa.step(0.0, 2, 1000.0) == 6
    assert hpa.step(30.0, 6, 1000.0) == 6  # period start: 6 - 4 = 2, limit 2 + 4
    assert hpa.step(45.0, 6, 1000.0) == 6
    assert hpa.step(59.0, 6, 1000.0) == 6
    assert hpa.step(60.0, 6, 1000.0) == 10  # the event at 0 is not after the cutoff 60 - 60
    # Same with the default 15 s period: a second sync within the period cannot add more.
    hpa = HpaState(1, 100, 100.0, PEAKSERVE)
    assert hpa.step(0.0, 2, 1000.0) == 6
    assert hpa.step(5.0, 6, 1000.0) == 6
    assert hpa.step(15.0, 6, 1000.0) == 12


def test_scale_down_policy_select_min_removes_one_pod_per_minute():
    down = PEAKSERVE.scale_down
    assert (down.select_policy, down.stabilization_window_seconds) == ("Min", 300)
    # Pods: 20 - 1 = 19; Percent: int(20 * 0.9) = 18; Min (the smaller change) -> 19.
    assert scale_down_limit(20, down) == 19
    assert scale_down_limit(100, down) == 99  # 99 vs 90
    as_max = ScalingRules(300, "Max", down.policies)
    assert scale_down_limit(20, as_max) == 18
    assert scale_down_limit(100, as_max) == 90
    hpa = HpaState(1, 100, 100.0, no_window())
    assert hpa.step(0.0, 20, 10.0) == 19
    assert hpa.step(15.0, 19, 10.0) == 19  # period start 19 + 1 = 20: limit 19 again
    assert hpa.step(59.0, 19, 10.0) == 19
    assert hpa.step(60.0, 19, 10.0) == 18


def test_short_dip_within_scale_down_window_does_not_scale_down():
    hpa = HpaState(1, 100, 100.0, PEAKSERVE)
    replicas = 10
    for t in range(0, 600, 15):
        metric = 50.0 if 60 <= t < 240 else 100.0  # a 180 s dip to half the target
        replicas = hpa.step(float(t), replicas, metric)
        assert replicas == 10


def test_sustained_dip_scales_down_once_the_window_has_passed():
    hpa = HpaState(1, 100, 100.0, PEAKSERVE)
    replicas = hpa.step(0.0, 10, 100.0)
    history = {}
    for t in range(15, 420, 15):
        replicas = hpa.step(float(t), replicas, 50.0)  # wants 5 from t=15 on
        history[t] = replicas
    assert history[285] == 10  # the recommendation of 10 made at t=0 is within (t - 300, t]
    assert history[300] == 9  # cutoff 0: it is out; the policy allows -1
    assert history[345] == 9
    assert history[360] == 8  # one pod per 60 s


def test_missing_pods_count_as_zero_up_and_as_target_down():
    # 8 pods at twice the target, 2 without metrics: (16 + 0) / 10 = 1.6 -> 16.
    assert pods_metric_replicas(10, 200.0, 8, 2, 100.0) == 16
    # 8 pods at half the target, 2 missing: (4 + 2) / 10 = 0.6 -> 6.
    assert pods_metric_replicas(10, 50.0, 8, 2, 100.0) == 6
    # 8 pods at 1.2x, 4 missing: the recount flips below 1, so no change.
    assert pods_metric_replicas(12, 120.0, 8, 4, 100.0) == 12
    assert pods_metric_replicas(3, 500.0, 0, 3, 100.0) is None  # no metrics at all


def test_legacy_path_without_behavior():
    hpa = HpaState(1, 100, 100.0, behavior=None)
    assert hpa.step(0.0, 1, 10_000.0) == 4  # max(2 * 1, 4)
    assert hpa.step(15.0, 4, 10_000.0) == 8
    assert hpa.step(30.0, 8, 10_000.0) == 16
    replicas = 16
    for t in range(45, 330, 15):
        replicas = hpa.step(float(t), replicas, 0.0)
    assert replicas == 100  # the recommendations of 100 are still within the last 300 s
    assert hpa.step(345.0, replicas, 0.0) == 1  # then straight to minReplicas: no rate limit


@pytest.mark.parametrize("select,expected", [("Max", 6), ("Min", 4), ("Disabled", 2)])
def test_select_policy_up(select, expected):
    rules = ScalingRules(0, select, PEAKSERVE.scale_up.policies)
    assert scale_up_limit(2, rules) == expected


CUSTOM = AutoscalingSpec.model_validate({
    "maxReplicas": 50,
    "scaleUp": {"stabilizationWindowSeconds": 30, "maxPods": 8, "periodSeconds": 30},
    "scaleDown": {"stabilizationWindowSeconds": 120, "maxPercent": 50, "maxPods": 5, "periodSeconds": 20},
})


def test_planner_behavior_is_the_one_the_operator_renders():
    rendered = render_hpa(Owner("ranker", "default", "uid-1"), CUSTOM)["spec"]["behavior"]
    assert Behavior.rendered(CUSTOM) == Behavior.from_hpa(rendered) == Behavior.from_hpa(behavior(CUSTOM))
    # What that HPA says, field by field: the spec's values, api.spec's defaults for the rest.
    assert Behavior.rendered(CUSTOM) == Behavior(
        ScalingRules(30, "Max", (ScalingPolicy("Pods", 8, 30), ScalingPolicy("Percent", 100, 30))),
        ScalingRules(120, "Min", (ScalingPolicy("Pods", 5, 20), ScalingPolicy("Percent", 50, 20))))
    assert Behavior.rendered() == Behavior.from_hpa(behavior(AutoscalingSpec(max_replicas=1)))


def test_hpa_behavior_fields_left_out_take_the_api_servers_defaults():
    defaults = Behavior.kubernetes_defaults()
    assert Behavior.from_hpa({}) == defaults
    partial = Behavior.from_hpa({"scaleDown": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                                 "scaleUp": {"selectPolicy": "Disabled"}})
    assert partial.scale_up == ScalingRules(0, "Disabled", defaults.scale_up.policies)
    assert partial.scale_down == ScalingRules(300, "Max", (ScalingPolicy("Pods", 2, 60),))


def test_a_change_to_the_specs_scale_down_changes_the_simulated_hpa():
    def scale_down(scale_down_spec: dict) -> list[int]:
        spec = AutoscalingSpec.model_validate({"maxReplicas": 50, "scaleDown": scale_down_spec})
        hpa = HpaState(1, 50, 100.0, Behavior.rendered(spec))
        replicas, seen = hpa.step(0.0, 20, 100.0), []
        for t in range(15, 181, 15):
            replicas = hpa.step(float(t), replicas, 10.0)  # a tenth of the target: wants a tenth of the pods
            seen.append(replicas)
        return seen

    # The default: 300 s stabilization, so nothing moves in three minutes.
    assert scale_down({}) == [20] * 12
    # 60 s window, then one pod (the gentler of 1 pod and 10%) per 60 s.
    assert scale_down({"stabilizationWindowSeconds": 60}) == [20, 20, 20, 19, 19, 19, 19, 18, 18, 18, 18, 17]
    # No window, 5 pods or 50% per 15 s, the gentler of the two: 20 - 5, 15 - 5, 10 - 5, half of 5 ...
    assert scale_down({"stabilizationWindowSeconds": 0, "maxPods": 5, "maxPercent": 50, "periodSeconds": 15}) == [
        15, 10, 5, 2, 1, 1, 1, 1, 1, 1, 1, 1]
