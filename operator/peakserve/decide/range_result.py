"""The answer of one Prometheus range query, as a pass knows it. Its own module: the snapshot holds it, and the
scaling decisions (capacity_target, predictive) that the snapshot asks when to read it consume it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RangeResult:
    """A Prometheus range query's answer: (labels, ((epoch seconds, value), ...)) per series; or why there is
    none (the error, as a message: a Prometheus that cannot be reached never fails a pass)."""

    series: tuple[tuple[dict[str, str], tuple[tuple[float, float], ...]], ...] = ()
    error: str | None = None
