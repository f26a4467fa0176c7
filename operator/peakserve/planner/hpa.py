"""The HorizontalPodAutoscaler's arithmetic, step by step as the controller does it.

Follows the documented algorithm and kube-controller-manager's podautoscaler (horizontal.go,
replica_calculator.go), rewritten here, not copied:

1. Replica calculator (Pods metric, AverageValue target):
   ratio = average metric / target; if |ratio - 1| <= tolerance (0.1) nothing changes, else
   desired = ceil(ratio * pods with metrics). Pods without metrics ("missing": still starting,
   or not yet listed by the metrics adapter) count as 0 on a scale-up and as exactly the target
   on a scale-down, and a recount that stays within tolerance or flips direction changes nothing.
2. Reconcile: spec.replicas 0 with minReplicas > 0 disables scaling; spec.replicas above
   maxReplicas or below minReplicas is set straight to the bound (no behavior applies).
3. With spec.behavior (normalizeDesiredReplicasWithBehaviors):
   a. Stabilization: every raw recommendation is recorded with its time. The scale-up bound is
      the smallest recommendation of the last scaleUp.stabilizationWindowSeconds, the scale-down
      bound the largest of the last scaleDown.stabilizationWindowSeconds (the new one included);
      the current count is clamped into [up bound, down bound].
   b. Rate: each policy proposes a limit from the replicas at the start of its period
      (current - added + removed by the scale events of the last periodSeconds):
      Pods: start +/- value; Percent up: ceil(start * (1 + value/100)), down:
      int(start * (1 - value/100)). selectPolicy Max takes the largest change, Min the
      smallest, Disabled none. Then minReplicas / maxReplicas bound the result.
   c. Every rescale is stored as a scale event (time, size of the change).
4. Without spec.behavior (the legacy path, Triton's k8s-onprem example): the largest
   recommendation of the last 300 s (--horizontal-pod-autoscaler-downscale-stabilization),
   then at most max(2 * current, 4) and at least minReplicas, every sync.

Times are seconds (floats); the controller's "after the cutoff" comparisons are strict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

if TYPE_CHECKING:
    from ..api.spec import AutoscalingSpec

DEFAULT_TOLERANCE = 0.1
DEFAULT_SYNC_PERIOD_S = 15.0
DEFAULT_DOWNSCALE_STABILIZATION_S = 300
# The legacy path's scale-up cap: max(factor * current, minimum) per sync.
LEGACY_SCALE_UP_FACTOR = 2.0
LEGACY_SCALE_UP_MINIMUM = 4.0

SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPAScalingPolicy: at most `value` pods (Pods) or percent (Percent) per period."""

    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of spec.behavior (HPAScalingRules)."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]

    @property
    def longest_period(self) -> int:
        return max((p.period_seconds for p in self.policies), default=0)

    @classmethod
    def from_hpa(cls, rules: Mapping[str, Any] | None, defaults: "ScalingRules") -> "ScalingRules":
        """One direction of an HPA's spec.behavior (scaleUp or scaleDown); what it leaves out takes
        `defaults`, as the API server fills it in."""
        rules = rules or {}
        given = rules.get("policies")
        policies = defaults.policies if given is None else tuple(
            ScalingPolicy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in given)
        return cls(int(rules.get("stabilizationWindowSeconds", defaults.stabilization_window_seconds)),
                   rules.get("selectPolicy", defaults.select_policy), policies)


@dataclass(frozen=True)
class Behavior:
    """spec.behavior of an autoscaling/v2 HPA."""

    scale_up: ScalingRules
    scale_down: ScalingRules

    @classmethod
    def kubernetes_defaults(cls) -> "Behavior":
        """What the API server fills in for a behavior whose fields are left out: up without
        stabilization, 4 pods or 100% per 15 s (Max); down after 300 s, 100% per 15 s."""
        return cls(
            scale_up=ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))),
            scale_down=ScalingRules(DEFAULT_DOWNSCALE_STABILIZATION_S, "Max",
                                    (ScalingPolicy("Percent", 100, 15),)),
        )

    @classmethod
    def from_hpa(cls, behavior: Mapping[str, Any]) -> "Behavior":
        """An HPA's spec.behavior (autoscaling/v2); a direction or a field left out takes
        kubernetes_defaults()'s, as the API server fills it in."""
        defaults = cls.kubernetes_defaults()
        return cls(ScalingRules.from_hpa(behavior.get("scaleUp"), defaults.scale_up),
                   ScalingRules.from_hpa(behavior.get("scaleDown"), defaults.scale_down))

    @classmethod
    def rendered(cls, autoscaling: "AutoscalingSpec | None" = None) -> "Behavior":
        """The behavior of the HPA the operator applies for `autoscaling` (render/autoscaler.py),
        by default for an AutoscalingSpec that leaves scaleUp and scaleDown out."""
        from ..api.spec import AutoscalingSpec
        from ..render.autoscaler import behavior

        # maxReplicas is required, and no part of the behavior.
        return cls.from_hpa(behavior(autoscaling or AutoscalingSpec(max_replicas=1)))


# --- 1. the replica calculator ---------------------------------------------------------------

def within_tolerance(ratio: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    return abs(ratio - 1.0) <= tolerance


def desired_replicas(current_replicas: int, current_metric: float, target: float,
                     tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The documented formula: ceil(current * metric / target), unchanged within tolerance."""
    ratio = current_metric / target
    if within_tolerance(ratio, tolerance):
        return current_replicas
    return math.ceil(ratio * current_replicas)


def pods_metric_replicas(current_replicas: int, metric_average: float, pods_with_metrics: int,
                         missing_pods: int, target: float,
                         tolerance: float = DEFAULT_TOLERANCE) -> int | None:
    """The replica calculator for a Pods metric: `pods_with_metrics` pods report
    `metric_average` on average, `missing_pods` report nothing. None: no pod has metrics
    (the controller then does not scale)."""
    if pods_with_metrics <= 0:
        return None
    ratio = metric_average / target
    if missing_pods <= 0:
        if within_tolerance(ratio, tolerance):
            return current_replicas
        return math.ceil(ratio * pods_with_metrics)
    # Missing pods: on a scale-down assume they sit at the target, on a scale-up at zero.
    fill = target if ratio < 1.0 else 0.0
    total_pods = pods_with_metrics + missing_pods
    new_ratio = (metric_average * pods_with_metrics + fill * missing_pods) / (target * total_pods)
    if within_tolerance(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current_replicas
    new_replicas = math.ceil(new_ratio * total_pods)
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas
    return new_replicas


# --- 3b. policy limits -----------------------------------------------------------------------

def _change_in_period(events: Sequence[tuple[float, int]], now: float, period: float) -> int:
    cutoff = now - period
    return sum(change for t, change in events if t > cutoff)


def scale_up_limit(current_replicas: int, rules: ScalingRules, now: float = 0.0,
                   up_events: Sequence[tuple[float, int]] = (),
                   down_events: Sequence[tuple[float, int]] = ()) -> int:
    """Most replicas the scale-up policies allow now (calculateScaleUpLimitWithScalingRules)."""
    if rules.select_policy == "Disabled":
        return current_replicas
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for policy in rules.policies:
        start = (current_replicas - _change_in_period(up_events, now, policy.period_seconds)
                 + _change_in_period(down_events, now, policy.period_seconds))
        if policy.type == "Pods":
            proposed = start + policy.value
        else:
            proposed = math.ceil(float(start) * (1 + float(policy.value) / 100))
        result = proposed if result is None else pick(result, proposed)
    return current_replicas if result is None else result


def scale_down_limit(current_replicas: int, rules: ScalingRules, now: float = 0.0,
                     up_events: Sequence[tuple[float, int]] = (),
                     down_events: Sequence[tuple[float, int]] = ()) -> int:
    """Fewest replicas the scale-down policies allow now (calculateScaleDownLimitWithBehaviors).
    selectPolicy Min (the smallest change) takes the largest of the proposals."""
    if rules.select_policy == "Disabled":
        return current_replicas
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for policy in rules.policies:
        start = (current_replicas - _change_in_period(up_events, now, policy.period_seconds)
                 + _change_in_period(down_events, now, policy.period_seconds))
        if policy.type == "Pods":
            proposed = start - policy.value
        else:
            proposed = int(float(start) * (1 - float(policy.value) / 100))
        result = proposed if result is None else pick(result, proposed)
    return current_replicas if result is None else result


# --- the controller's memory of one HPA ------------------------------------------------------

@dataclass
class HpaState:
    """One HPA: its bounds, target and behavior, plus the history the controller keeps
    (recommendations, scale-up and scale-down events). Call step() every sync period.

    behavior None is the legacy path (no spec.behavior, as in Triton's k8s-onprem example)."""

    min_replicas: int
    max_replicas: int
    target: float
    behavior: Behavior | None = field(default_factory=Behavior.kubernetes_defaults)
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)
    last_reason: str = ""

    def step(self, now: float, current_replicas: int, metric_value: float | None, *,
             pods_with_metrics: int | None = None) -> int:
        """One reconcile at `now`: the replica count the HPA writes (current_replicas when it
        does not scale). metric_value is the average over the pods with metrics; by default
        every current replica has one (the documented formula). None: no metrics this sync."""
        if not self.recommendations:
            self.recommendations.append((now, current_replicas))  # recordInitialRecommendation
        if current_replicas == 0 and self.min_replicas != 0:
            self.last_reason = "ScalingDisabled"
            return 0
        if current_replicas > self.max_replicas:
            return self._rescale(now, current_replicas, self.max_replicas, "AboveMaxReplicas")
        if current_replicas < self.min_replicas:
            return self._rescale(now, current_replicas, self.min_replicas, "BelowMinReplicas")
        if metric_value is None:
            self.last_reason = "FailedGetPodsMetric"
            return current_replicas
        with_metrics = current_replicas if pods_with_metrics is None else pods_with_metrics
        proposed = pods_metric_replicas(current_replicas, metric_value, with_metrics,
                                        max(current_replicas - with_metrics, 0), self.target, self.tolerance)
        if proposed is None:
            self.last_reason = "FailedGetPodsMetric"
            return current_replicas
        if self.behavior is None:
            desired = self._normalize_legacy(now, current_replicas, proposed)
        else:
            desired = self.normalize(now, current_replicas, proposed)
        return self._rescale(now, current_replicas, desired, self.last_reason)

    # 3a + 3b
    def normalize(self, now: float, current: int, proposed: int) -> int:
        """normalizeDesiredReplicasWithBehaviors: stabilize, then limit the rate."""
        b = self.behavior
        assert b is not None
        up_cutoff = now - b.scale_up.stabilization_window_seconds
        down_cutoff = now - b.scale_down.stabilization_window_seconds
        up_bound = down_bound = proposed
        for t, rec in self.recommendations:
            if t > up_cutoff:
                up_bound = min(up_bound, rec)
            if t > down_cutoff:
                down_bound = max(down_bound, rec)
        stabilized = min(max(current, up_bound), down_bound)
        self._record(now, proposed, max(b.scale_up.stabilization_window_seconds,
                                        b.scale_down.stabilization_window_seconds))
        self.last_reason = "ScaleUpStabilized" if stabilized != proposed and proposed >= current else (
            "ScaleDownStabilized" if stabilized != proposed else "DesiredWithinRange")
        if stabilized > current:
            limit = max(scale_up_limit(current, b.scale_up, now, self.up_events, self.down_events), current)
            allowed = min(self.max_replicas, limit)
            if stabilized > allowed:
                self.last_reason = "ScaleUpLimit" if limit < self.max_replicas else "TooManyReplicas"
                return allowed
        elif stabilized < current:
            limit = min(scale_down_limit(current, b.scale_down, now, self.up_events, self.down_events), current)
            allowed = max(self.min_replicas, limit)
            if stabilized < allowed:
                self.last_reason = "ScaleDownLimit" if limit > self.min_replicas else "TooFewReplicas"
                return allowed
        return stabilized

    def _normalize_legacy(self, now: float, current: int, proposed: int) -> int:
        """normalizeDesiredReplicas: no spec.behavior."""
        cutoff = now - self.downscale_stabilization_s
        stabilized = max([proposed] + [rec for t, rec in self.recommendations if t >= cutoff])
        self._record(now, proposed, self.downscale_stabilization_s)
        up_cap = int(max(LEGACY_SCALE_UP_FACTOR * current, LEGACY_SCALE_UP_MINIMUM))
        allowed_max = min(self.max_replicas, up_cap)
        self.last_reason = "ScaleDownStabilized" if stabilized != proposed else "DesiredWithinRange"
        if stabilized < self.min_replicas:
            self.last_reason = "TooFewReplicas"
            return self.min_replicas
        if stabilized > allowed_max:
            self.last_reason = "ScaleUpLimit" if up_cap < self.max_replicas else "TooManyReplicas"
            return allowed_max
        return stabilized

    def _record(self, now: float, recommendation: int, keep_s: float) -> None:
        cutoff = now - keep_s
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= cutoff]
        self.recommendations.append((now, recommendation))

    def _rescale(self, now: float, current: int, desired: int, reason: str) -> int:
        self.last_reason = reason
        if desired != current and self.behavior is not None:
            if desired > current:
                keep = self.behavior.scale_up.longest_period
                self.up_events = [(t, c) for t, c in self.up_events if t > now - keep]
                self.up_events.append((now, desired - current))
            else:
                keep = self.behavior.scale_down.longest_period
                self.down_events = [(t, c) for t, c in self.down_events if t > now - keep]
                self.down_events.append((now, current - desired))
        return desired
