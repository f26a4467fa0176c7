"""The scaling policies `peakserve plan` compares, as plain data for the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

from .hpa import Behavior

# Triton's k8s-onprem example: HPA on avg_time_queue_us, AverageValue 50 (microseconds),
# no spec.behavior (so the controller's legacy path: up to max(2x, 4) per sync, down after 300 s).
TRITON_EXAMPLE_TARGET_US = 50.0


@dataclass(frozen=True)
class Static:
    """A fixed replica count, provisioned before the trace starts."""

    replicas: int
    name: str = "static"
    label: str = "static peak"


@dataclass(frozen=True)
class Oracle:
    """Perfect foresight: at every moment exactly the replicas the SLO needs, each created
    `startup` seconds before it must serve, removed as soon as it is not needed."""

    name: str = "oracle"
    label: str = "oracle (perfect foresight)"


@dataclass(frozen=True)
class Floor:
    """A scheduled replica floor: minReplicas raised to `min_replicas` from start - lead
    until end (seconds from the trace start)."""

    start_s: float
    end_s: float
    min_replicas: int
    lead_s: float = 0.0
    name: str = "promotion"

    def active(self, t: float) -> bool:
        return self.start_s - self.lead_s <= t < self.end_s


@dataclass(frozen=True)
class Predictive:
    """The operator's predictive floor (demand/forecast.py): every `refresh_s` the peak of the next
    lead + refresh seconds is forecast from the history before now, and minReplicas rises to
    ceil(peak / per_replica_rps), never above maxReplicas."""

    per_replica_rps: float
    lead_s: float
    refresh_s: float = 300.0
    min_history_s: float = 25 * 3600.0


@dataclass(frozen=True)
class Hpa:
    """A metric HPA, optionally under scheduled floors. `target` is the target in the
    metric's unit: microseconds for queueTime (the default), requests for pendingRequests,
    percent for gpuUtilization."""

    min_replicas: int
    max_replicas: int
    target: float
    behavior: Behavior | None
    floors: tuple[Floor, ...] = ()
    tolerance: float = 0.1
    metric: str = "queueTime"
    name: str = "hpa"
    label: str = "metric HPA"
    predictive: Predictive | None = None

    def bounds(self, t: float, predicted: int = 0) -> tuple[int, int]:
        """(minReplicas, maxReplicas) in force at t: floors raise both when needed; the predictive
        floor (`predicted`) raises minReplicas up to maxReplicas only."""
        floor = max((f.min_replicas for f in self.floors if f.active(t)), default=0)
        low = max(self.min_replicas, min(predicted, self.max_replicas), floor)
        return low, max(self.max_replicas, floor)


Policy = Static | Oracle | Hpa


@dataclass(frozen=True)
class Scenario:
    """What the compared policies share: HPA bounds, behavior and floors of the planned spec; the
    capacity-proportional signal (`metric`, `target` per pod) and the queue metric it replaces."""

    min_replicas: int
    max_replicas: int
    target: float
    behavior: Behavior = field(default_factory=Behavior.rendered)
    floors: tuple[Floor, ...] = ()
    metric: str = "requestRate"
    queue_metric: str = "queueTime"
    queue_target: float = 50_000.0
    predictive_per_replica: float = 0.0   # requests/s per replica the predictive floor divides by
    lead_s: float = 240.0
    min_history_s: float = 25 * 3600.0

    @property
    def recommended(self) -> str:
        """peakserve's default: the signal, with the schedules, and the predictive floor."""
        return "predictive"

    def policies(self, static_replicas: int) -> list[Policy]:
        lo, hi = self.min_replicas, self.max_replicas
        predictive = Predictive(self.predictive_per_replica, self.lead_s, min_history_s=self.min_history_s)
        signal = f"{self.metric} HPA"
        policies: list[Policy] = [
            Static(static_replicas),
            Hpa(lo, hi, TRITON_EXAMPLE_TARGET_US, None,
                name="reactive", label="reactive HPA (Triton example: 50 us, default behavior)"),
            Hpa(lo, hi, self.queue_target, self.behavior, self.floors, metric=self.queue_metric,
                name="queue", label=f"{self.queue_metric} HPA + schedule (peakserve before)"),
            Hpa(lo, hi, self.target, self.behavior, metric=self.metric, name="signal", label=f"{signal} alone"),
        ]
        if self.floors:
            policies.append(Hpa(lo, hi, self.target, self.behavior, self.floors, metric=self.metric,
                                name="schedule", label=f"{signal} + schedule"))
        policies += [
            Hpa(lo, hi, self.target, self.behavior, self.floors, metric=self.metric, predictive=predictive,
                name="predictive", label=f"{signal} + schedule + predictive (peakserve)" if self.floors
                else f"{signal} + predictive (peakserve)"),
            Oracle(),
        ]
        return policies
