"""Capacity search: the highest throughput the endpoints sustain within a p99 latency SLO.

:func:`find_capacity` runs short bounded load steps at rising load: concurrency ``start``,
``start x factor``, ... (closed loop) or rate ``start``, ``start x factor``, ... (open loop). It
stops at the first step that breaks the SLO (p99 latency from the intended start above
``slo_ms``, or an error rate above ``max_error_rate``; at a fixed rate also drops, an achieved
rate below ``min_achieved`` of the asked one, or this client falling behind its own schedule),
when throughput stops rising (less than ``min_gain`` over the best step so far), or after
``max_steps``. The capacity is the best throughput of a step within the SLO; ``per_replica_rps``
divides it by the number of endpoints that got requests (what ``peakserve plan --capacity``
consumes when the bench ran against one replica).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .data import RequestData
from .endpoints import EndpointSource
from .runner import InputsFactory, LoadError, run_load
from .stats import SEND_LAG_WARN_MS, LoadResult

MAX_STEPS = 12


@dataclass
class CapacityStep:
    level: float                  # the concurrency (closed loop) or the asked rate (open loop)
    throughput_rps: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    completed: int
    errors: int
    dropped: int
    send_lag_p99_ms: float | None  # fixed rate: how late this client sent (see LoadResult)
    within_slo: bool
    verdict: str                  # "ok", or why the step is not within the SLO
    endpoints: int


@dataclass
class CapacityResult:
    model: str
    mode: str
    slo_ms: float
    batch_rows: int
    capacity_rps: float           # 0.0 when no step was within the SLO
    capacity_rows_per_s: float
    per_replica_rps: float
    per_replica_rows_per_s: float
    replicas: int
    best_level: float | None
    best_p99_ms: float | None
    stop_reason: str
    lower_bound: bool             # the search ended before the servers did (max_steps, or this
                                  # client fell behind): the servers may sustain more
    steps: list[CapacityStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(result: LoadResult, *, slo_ms: float, max_error_rate: float,
          min_achieved: float) -> str:
    """"ok" when a step is within the SLO, else the reason it is not."""
    p99 = result.latency_ms.get("p99")
    if result.completed == 0:
        return "no request succeeded"
    attempts = result.sent + result.dropped
    if attempts and result.errors / attempts > max_error_rate:
        return f"error rate {result.errors / attempts:.1%} > {max_error_rate:.1%}"
    if result.mode == "rate":
        lag = result.send_lag_ms.get("p99")
        if lag is not None and lag > SEND_LAG_WARN_MS:
            return f"the load generator fell behind (send lag p99 {lag:.1f} ms)"
        if result.dropped:
            return f"{result.dropped} requests dropped (too many in flight)"
        if result.rate and result.throughput_rps < min_achieved * result.rate:
            return (f"achieved {result.throughput_rps:.1f} req/s < {min_achieved:.0%} of "
                    f"the asked {result.rate:g}")
    if p99 is not None and p99 > slo_ms:
        return f"p99 {p99:.1f} ms > SLO {slo_ms:g} ms"
    return "ok"


def _next_level(mode: str, level: float, factor: float) -> float:
    if mode == "concurrency":
        return float(max(int(level) + 1, int(round(level * factor))))
    return level * factor


async def find_capacity(endpoints: EndpointSource, model: str, *, slo_ms: float,
                        mode: str = "concurrency", start: float = 1, factor: float = 2.0,
                        max_steps: int = 6, step_seconds: float = 3.0, step_warmup: float = 1.0,
                        step_max_requests: int | None = None, min_gain: float = 0.05,
                        max_error_rate: float = 0.0, min_achieved: float = 0.9,
                        batch_rows: int = 1, inputs_factory: InputsFactory | None = None,
                        on_step: Callable[[CapacityStep], Any] | None = None,
                        **run_kwargs: Any) -> CapacityResult:
    """Step the load up until the p99 SLO breaks or throughput stops rising; see the module doc.

    At most ``max_steps`` steps (<= 12) of ``step_warmup + step_seconds`` each. ``run_kwargs``
    go to :func:`~peakserve.loadgen.runner.run_load` (protocol, timeout_s, on_progress, ...).
    """
    if not (slo_ms > 0 and math.isfinite(slo_ms)):
        raise ValueError("slo_ms must be > 0")
    if not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be within 1..{MAX_STEPS}")
    if factor <= 1:
        raise ValueError("factor must be > 1")
    if not (start > 0 and math.isfinite(start)):
        raise ValueError("start must be > 0")
    if mode == "concurrency" and start < 1:
        raise ValueError("concurrency steps start at >= 1")
    signature = run_kwargs.pop("signature", None)
    if inputs_factory is None:
        # read the model's signature once, not at every step
        from .endpoints import EndpointPool
        from .runner import resolve_signature

        pool = EndpointPool(endpoints, default_protocol=run_kwargs.get("protocol", "grpc"))
        try:
            await pool.refresh()
            if signature is None:
                signature = await resolve_signature(pool, model, run_kwargs.get("model_version", ""),
                                                    run_kwargs.get("timeout_s", 10.0))
        finally:
            await pool.close()
        inputs_factory = RequestData(signature, batch_rows, seed=run_kwargs.get("seed", 0))

    steps: list[CapacityStep] = []
    best: CapacityStep | None = None
    stop_reason = f"reached max_steps {max_steps}"
    lower_bound = True
    level = float(start)
    replicas = 0
    for _ in range(max_steps):
        kwargs = dict(run_kwargs)
        if mode == "concurrency":
            kwargs["concurrency"] = int(level)
        else:
            kwargs["rate"] = level
        result = await run_load(endpoints, model, mode=mode, duration=step_seconds,
                                warmup=step_warmup, max_requests=step_max_requests,
                                batch_rows=batch_rows, inputs_factory=inputs_factory,
                                signature=signature, **kwargs)
        used = [e for e in result.endpoints.values() if e.sent]
        replicas = max(replicas, len(used))
        verdict = judge(result, slo_ms=slo_ms, max_error_rate=max_error_rate,
                        min_achieved=min_achieved)
        step = CapacityStep(level=level, throughput_rps=result.throughput_rps,
                            rows_per_s=result.rows_per_s, p50_ms=result.latency_ms.get("p50"),
                            p99_ms=result.latency_ms.get("p99"), completed=result.completed,
                            errors=result.errors, dropped=result.dropped,
                            send_lag_p99_ms=result.send_lag_ms.get("p99"),
                            within_slo=verdict == "ok", verdict=verdict, endpoints=len(used))
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if not step.within_slo:
            stop_reason = f"{mode} {level:g}: {verdict}"
            lower_bound = verdict.startswith("the load generator fell behind")
            break
        previous = best
        if best is None or step.throughput_rps > best.throughput_rps:
            best = step
        if previous is not None and step.throughput_rps < previous.throughput_rps * (1 + min_gain):
            stop_reason = (f"throughput stopped rising at {mode} {level:g} "
                           f"({step.throughput_rps:.1f} req/s vs {previous.throughput_rps:.1f})")
            lower_bound = False
            break
        level = _next_level(mode, level, factor)
    if best is None and not steps:
        raise LoadError("no capacity step ran")
    replicas = max(replicas, 1)
    capacity = best.throughput_rps if best else 0.0
    rows = best.rows_per_s if best else 0.0
    return CapacityResult(
        model=model, mode=mode, slo_ms=slo_ms, batch_rows=batch_rows,
        capacity_rps=capacity, capacity_rows_per_s=rows,
        per_replica_rps=round(capacity / replicas, 3),
        per_replica_rows_per_s=round(rows / replicas, 3), replicas=replicas,
        best_level=best.level if best else None, best_p99_ms=best.p99_ms if best else None,
        stop_reason=stop_reason, lower_bound=lower_bound and best is not None, steps=steps)
