"""The speed gate: fp32 and the candidates timed side by side, in one run, interleaved.

Machine noise (a neighbour's burst, frequency changes) drifts over seconds. Timing the models
one after another would hand that drift to whichever ran last; round-robin spreads it evenly,
so the ratio candidate/fp32 stays meaningful even when absolute numbers wobble.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .progress import Progress
from .runtime import DEFAULT_THREADS, open_session


@dataclass(frozen=True)
class SpeedBudget:
    """How long to measure. The default keeps the gate to a few seconds for a small model;
    benchmarks pass a bigger budget for tighter figures."""

    seconds: float = 3.0   # wall time for all batch sizes together (after min_iters is reached)
    warmup: int = 3        # untimed runs per model and batch size (allocations, caches, CUDA graphs)
    min_iters: int = 5     # timed runs per model and batch size, even past the time bound
    max_iters: int = 500   # timed runs per model and batch size at most


def measure(models: dict[str, Path], batch_inputs: Callable[[int], dict[str, np.ndarray]],
            batch_sizes: Sequence[int], providers: Sequence[str], *, threads: int = DEFAULT_THREADS,
            budget: SpeedBudget = SpeedBudget(), progress: Progress | None = None) -> dict[str, dict[int, dict]]:
    """{model: {batch: {p50Ms, p99Ms, meanMs, rowsPerS, iterations}}} for every model and batch size.

    Throughput is rows / median latency: with a budget of a few seconds, one preempted run
    would swing a mean-based figure, and the median is what a steady server sees.
    """
    progress = progress or Progress(quiet=True)
    sessions = {name: open_session(path, providers, threads) for name, path in models.items()}
    names = list(sessions)
    per_batch_seconds = budget.seconds / max(len(batch_sizes), 1)
    results: dict[str, dict[int, dict]] = {name: {} for name in names}
    for batch in batch_sizes:
        feed = batch_inputs(batch)
        for name in names:
            for _ in range(budget.warmup):
                sessions[name].run(None, feed)
        times: dict[str, list[float]] = {name: [] for name in names}
        start = time.monotonic()
        with progress.counter(f"batch {batch}: timing {len(names)} models", budget.max_iters) as bar:
            for i in range(budget.max_iters):
                if i >= budget.min_iters and time.monotonic() - start > per_batch_seconds:
                    break
                # Rotate who goes first, so no model always runs right after the same neighbour.
                for name in names[i % len(names):] + names[:i % len(names)]:
                    t0 = time.perf_counter()
                    sessions[name].run(None, feed)
                    times[name].append(time.perf_counter() - t0)
                bar.advance()
        for name in names:
            ms = np.array(times[name]) * 1000.0
            p50 = float(np.median(ms))
            results[name][batch] = {"p50Ms": round(p50, 4), "p99Ms": round(float(np.percentile(ms, 99)), 4),
                                    "meanMs": round(float(ms.mean()), 4),
                                    "rowsPerS": round(batch / (p50 / 1000.0), 1) if p50 > 0 else math.inf,
                                    "iterations": len(ms)}
    return results


def speedups(results: dict[str, dict[int, dict]], name: str, reference: str = "fp32") -> dict[int, float]:
    """Throughput of `name` over the reference's, per batch size."""
    return {b: results[name][b]["rowsPerS"] / results[reference][b]["rowsPerS"] for b in results[reference]}


def geometric_mean(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def speed_failures(per_batch: dict[int, float], min_speedup: float, min_batch_speedup: float) -> list[str]:
    """Why a candidate is not fast enough: its geometric-mean speedup over the batch sizes is below
    min_speedup, or some batch size is slower than min_batch_speedup x fp32 (a regression there).

    Small batches are dominated by per-call overhead that no precision removes, so requiring the full
    speedup at every size would reject models that are much faster where the traffic is batched.
    """
    if not per_batch:
        return ["no batch size was measured"]
    failures = []
    mean = geometric_mean(list(per_batch.values()))
    if not mean >= min_speedup:
        failures.append(f"speedup {mean:.2f}x (geometric mean) < minSpeedup {min_speedup:g}")
    failures += [f"speedup {s:.2f}x at batch {b} < minBatchSpeedup {min_batch_speedup:g}"
                 for b, s in per_batch.items() if not s >= min_batch_speedup]
    return failures


def speed_figures(per_batch: dict[int, float]) -> dict[str, float]:
    """speedup (geometric mean over batch sizes) and speedupB<batch> for each batch size."""
    figures = {"speedup": round(geometric_mean(list(per_batch.values())), 4)}
    figures.update({f"speedupB{b}": round(s, 4) for b, s in per_batch.items()})
    return figures
