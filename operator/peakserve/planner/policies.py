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

    def bounds(self, t: float) -> tuple[int, int]:
        """(minReplicas, maxReplicas) in force at t: floors raise both when needed."""
        floor = max((f.min_replicas for f in self.floors if f.active(t)), default=0)
        return max(self.min_replicas, floor), max(self.max_replicas, floor)


Policy = Static | Oracle | Hpa


@dataclass(frozen=True)
class Scenario:
    """What the compared policies share: HPA bounds and target of the planned spec."""

    min_replicas: int
    max_replicas: int
    target: float
    behavior: Behavior = field(default_factory=Behavior.rendered)
    floors: tuple[Floor, ...] = ()
    metric: str = "queueTime"

    def policies(self, static_replicas: int) -> list[Policy]:
        return [
            Static(static_replicas),
            Hpa(self.min_replicas, self.max_replicas, TRITON_EXAMPLE_TARGET_US, None,
                name="reactive", label="reactive HPA (Triton example: 50 us, default behavior)"),
            Hpa(self.min_replicas, self.max_replicas, self.target, self.behavior, self.floors,
                metric=self.metric, name="schedule", label="schedule + metric HPA (peakserve)"),
            Hpa(self.min_replicas, self.max_replicas, self.target, self.behavior, metric=self.metric,
                name="metric", label="metric HPA alone (peakserve target and behavior, no schedule)"),
            Oracle(),
        ]
