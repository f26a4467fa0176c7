"""Figures and thresholds -> the failing checks -> the result the Job writes: pure functions.

Checks, in this order (a result's ``reason`` is the first that failed):

    ErrorRate      canary failure ratio > maxErrorRate
    Latency        canary mean latency > stable's x (1 + maxLatencyIncrease) + 2 ms
    QueueTime      canary mean queue time > stable's x (1 + maxQueueIncrease) + 2 ms
    ScoreDrift     rankers: PSI of the canary's scores against the stable's > maxPsi
    TopKAgreement  rankers: top-k overlap < minTopKAgreement
    AucDrop        rankers with labels: stable AUC - canary AUC > maxAucDrop
    Cosine         embeddings: smallest per-row cosine < minCosine
    MaxAbsDiff     every model, when maxAbsDiff is set: max |canary - stable| > maxAbsDiff

Each comparison is written so that a NaN figure fails it. What was not compared (no Prometheus,
too little canary traffic, no probe) is listed in ``skipped``; a result passes when nothing that
ran failed. The JSON stays under Kubernetes' 4096-byte termination message, figures rounded to 4
significant digits (non-finite ones as strings: a status patch refuses NaN).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..api.spec import ProbeAnalysis, RolloutAnalysis
from ..redact import redact_text
from .promql import SideMetrics

REASONS = ("ErrorRate", "Latency", "QueueTime", "ScoreDrift", "TopKAgreement", "AucDrop", "Cosine", "MaxAbsDiff")
PASSED, ANALYSIS_ERROR = "Passed", "AnalysisError"
LATENCY_SLACK_MS = 2.0   # below a couple of milliseconds, a relative increase is noise
RESULT_LIMIT_BYTES = 4000  # Kubernetes keeps 4096 bytes of a termination message


@dataclass(frozen=True)
class Failure:
    reason: str     # one of REASONS
    message: str    # for people: figure, threshold, and on what


def num(value: float) -> str:
    """A figure in a message: 4 significant digits."""
    return f"{value:.4g}"


def figure(value: float) -> int | float | str:
    """A figure in the result: 4 significant digits (counts given as int stay exact); NaN and
    infinities as strings."""
    if isinstance(value, int):
        return value
    value = float(value)
    return float(f"{value:.4g}") if math.isfinite(value) else str(value)


# ------------------------------------------------------------------------------------- metrics

def metric_figures(canary: SideMetrics, stable: SideMetrics) -> dict[str, float]:
    """The metric figures that are defined (rates need requests, latencies successful ones)."""
    out = {"canaryRequests": canary.requests, "stableRequests": stable.requests}
    for prefix, side in (("canary", canary), ("stable", stable)):
        for name, value in (("ErrorRate", side.error_rate), ("LatencyMs", side.latency_ms),
                            ("QueueMs", side.queue_ms)):
            if value is not None:
                out[prefix + name] = value
    return out


def metric_checks(canary: SideMetrics, stable: SideMetrics, t: RolloutAnalysis
                  ) -> tuple[list[Failure], list[str]]:
    """(failures, skipped) of the metric checks over the window."""
    window = f"over {t.window_seconds} s"
    if canary.requests <= 0:
        return [], [f"metrics: no canary requests {window}"]
    if canary.requests < t.min_requests:
        # Too little traffic to judge a rate, unless the failures already seen are more than minRequests
        # requests could ever allow: then no further successes could bring the rate under the threshold.
        if canary.failure > t.max_error_rate * t.min_requests:
            return [Failure("ErrorRate", f"{num(canary.failure)} of {num(canary.requests)} canary requests failed "
                                         f"{window}, more than {num(t.max_error_rate)} x minRequests "
                                         f"{t.min_requests} allow")], []
        return [], [f"metrics: {num(canary.requests)} canary requests < minRequests {t.min_requests} {window}"]
    failures, skipped = [], []
    rate = canary.error_rate
    if not rate <= t.max_error_rate:
        failures.append(Failure("ErrorRate", f"canary error rate {num(rate)} > {num(t.max_error_rate)} {window} "
                                             f"({num(canary.requests)} requests)"))
    for reason, what, attribute, increase in (("Latency", "latency", "latency_ms", t.max_latency_increase),
                                              ("QueueTime", "queue time", "queue_ms", t.max_queue_increase)):
        mine, theirs = getattr(canary, attribute), getattr(stable, attribute)
        if mine is None or theirs is None:
            side = "canary" if mine is None else "stable"
            skipped.append(f"metrics: {side} served no successful requests {window}; mean {what} not compared")
            continue
        limit = theirs * (1 + increase) + LATENCY_SLACK_MS
        if not mine <= limit:
            failures.append(Failure(reason, f"canary mean {what} {num(mine)} ms > {num(limit)} ms (stable "
                                            f"{num(theirs)} ms x {num(1 + increase)} + {num(LATENCY_SLACK_MS)} ms)"))
    return failures, skipped


# ------------------------------------------------------------------------------------- probe

def probe_checks(figures: dict[str, float], p: ProbeAnalysis) -> list[Failure]:
    """The failing probe checks, from compare_outputs' figures."""
    on = f"on {int(figures['probeRows'])} probe rows"
    failures = []
    if "psi" in figures and not figures["psi"] <= p.max_psi:
        failures.append(Failure("ScoreDrift", f"score PSI {num(figures['psi'])} > {num(p.max_psi)} {on}"))
    if "topKAgreement" in figures and not figures["topKAgreement"] >= p.min_top_k_agreement:
        k = min(p.top_k, int(figures["probeRows"]))
        failures.append(Failure("TopKAgreement", f"top-{k} agreement {num(figures['topKAgreement'])} < "
                                                 f"{num(p.min_top_k_agreement)} {on}"))
    if "stableAuc" in figures:
        drop = figures["stableAuc"] - figures["canaryAuc"]
        if not drop <= p.max_auc_drop:
            failures.append(Failure("AucDrop", f"AUC {num(figures['canaryAuc'])} vs stable {num(figures['stableAuc'])}"
                                               f": drop {num(drop)} > {num(p.max_auc_drop)} {on}"))
    if "cosineMin" in figures and not figures["cosineMin"] >= p.min_cosine:
        failures.append(Failure("Cosine", f"min cosine {num(figures['cosineMin'])} < {num(p.min_cosine)} {on} "
                                          f"(mean {num(figures['cosineMean'])})"))
    if p.max_abs_diff is not None and not figures["maxAbsDiff"] <= p.max_abs_diff:
        failures.append(Failure("MaxAbsDiff", f"max |canary - stable| {num(figures['maxAbsDiff'])} > "
                                              f"{num(p.max_abs_diff)} {on}"))
    return failures


def probe_skips(figures: dict[str, float], kind: str, has_labels: bool) -> list[str]:
    """What a probe comparison that ran still could not compare."""
    if kind == "ranker" and has_labels and "stableAuc" not in figures:
        return ["probe: the labels hold one class only; AUC not compared"]
    return []


# ------------------------------------------------------------------------------------- result

def summary(figures: dict[str, float]) -> str:
    """The message of a passing result: the headline figures."""
    parts = []
    if "canaryErrorRate" in figures:
        parts.append(f"canary error rate {num(figures['canaryErrorRate'])} on {num(figures['canaryRequests'])} "
                     "requests")
    if "canaryLatencyMs" in figures and "stableLatencyMs" in figures:
        parts.append(f"latency {num(figures['canaryLatencyMs'])} ms (stable {num(figures['stableLatencyMs'])} ms)")
    probe = [f"{label} {num(figures[key])}" for key, label in (
        ("psi", "score PSI"), ("topKAgreement", "top-k agreement"), ("canaryAuc", "AUC"),
        ("cosineMin", "min cosine"), ("maxAbsDiff", "max |diff|")) if key in figures]
    if probe:
        parts.append(", ".join(probe) + f" on {int(figures['probeRows'])} probe rows")
    return "canary within thresholds: " + "; ".join(parts) if parts else "nothing compared (see skipped)"


def result(figures: dict[str, float], failures: list[Failure], skipped: list[str]) -> dict[str, Any]:
    """The result of an analysis that ran, sized for a termination message."""
    passed = not failures
    return fit({
        "phase": "Succeeded", "passed": passed,
        "reason": PASSED if passed else failures[0].reason,
        "message": summary(figures) if passed else "; ".join(f.message for f in failures),
        "figures": {k: figure(v) for k, v in figures.items()},
        "skipped": list(skipped),
    })


def analysis_error(message: str) -> dict[str, Any]:
    """The result of an analysis that could not run."""
    return fit({"phase": "Failed", "passed": False, "reason": ANALYSIS_ERROR, "message": message})


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def fit(out: dict[str, Any], limit: int = RESULT_LIMIT_BYTES) -> dict[str, Any]:
    """``out`` with credentials redacted and texts clipped until json.dumps() is under ``limit`` bytes."""
    for message_len, skip_len, skips in ((2000, 300, 8), (1000, 160, 6), (400, 100, 4), (160, 60, 2), (80, 40, 0)):
        fitted = dict(out, message=_clip(redact_text(out["message"]), message_len))
        if "skipped" in out:
            fitted["skipped"] = [_clip(redact_text(s), skip_len) for s in out["skipped"][:skips]]
        if len(json.dumps(fitted).encode()) <= limit:
            return fitted
    return fitted


def dumps(out: dict[str, Any]) -> str:
    """The result as strict JSON (figure() already turned non-finite numbers into strings)."""
    return json.dumps(out, allow_nan=False)
