"""The PromQL of the metric checks, and the parsing of Prometheus' answers: pure functions.

Each side (stable, canary) is four counters of Triton's, summed over the side's pods and
increased over the analysis window:

    nv_inference_request_success, nv_inference_request_failure      requests and errors
    nv_inference_request_duration_us, nv_inference_queue_duration_us  time, in microseconds

Triton labels them ``model`` and ``version``; the scrape adds ``namespace`` and ``pod``. Each
counter is its own query: ``a + b`` in PromQL is empty when either side is, and a side that
never failed has no failure series to add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import AnalysisError

COUNTERS: dict[str, str] = {
    "success": "nv_inference_request_success",
    "failure": "nv_inference_request_failure",
    "durationUs": "nv_inference_request_duration_us",
    "queueUs": "nv_inference_queue_duration_us",
}


def quote(value: str) -> str:
    """A PromQL string literal: backslash, double quote and newline escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(namespace: str, pod_regex: str, model: str) -> str:
    """``{namespace="NS", pod=~"REGEX", model="NAME"}``."""
    return f"{{namespace={quote(namespace)}, pod=~{quote(pod_regex)}, model={quote(model)}}}"


def increase_query(metric: str, namespace: str, pod_regex: str, model: str, window_seconds: int) -> str:
    """``sum(increase(METRIC{...}[Ws]))``: the side's total over the window, all pods together."""
    return f"sum(increase({metric}{selector(namespace, pod_regex, model)}[{int(window_seconds)}s]))"


def side_queries(namespace: str, pod_regex: str, model: str, window_seconds: int) -> dict[str, str]:
    """One query per counter of COUNTERS, by its short name."""
    return {key: increase_query(metric, namespace, pod_regex, model, window_seconds)
            for key, metric in COUNTERS.items()}


def parse_value(response: Mapping[str, Any]) -> float:
    """The number a ``/api/v1/query`` answer holds: a scalar, or the sum of an instant vector.

    An empty vector is 0 (no series matched: nothing was served in the window). An error answer,
    another result type or a value that is not a finite number raises AnalysisError.
    """
    if not isinstance(response, Mapping):
        raise AnalysisError("Prometheus answered with something other than a JSON object")
    if response.get("status") != "success":
        raise AnalysisError(f"Prometheus query failed: {response.get('errorType', 'error')}: "
                            f"{response.get('error', 'no error message')}")
    data = response.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            values = [float(result[1])]
        elif kind == "vector":
            values = [float(sample["value"][1]) for sample in result or []]
        else:
            raise AnalysisError(f"Prometheus answered a {kind} result, expected a vector or a scalar")
    except (TypeError, KeyError, IndexError, ValueError) as err:
        raise AnalysisError(f"Prometheus answer cannot be read: {type(err).__name__}: {err}") from None
    total = math.fsum(values)
    if not math.isfinite(total):
        raise AnalysisError(f"Prometheus answered {total} for a counter increase")
    return total


@dataclass(frozen=True)
class SideMetrics:
    """A side's counter increases over the window, and the figures derived from them."""

    success: float
    failure: float
    duration_us: float
    queue_us: float

    @classmethod
    def from_increases(cls, increases: Mapping[str, float]) -> "SideMetrics":
        return cls(success=increases["success"], failure=increases["failure"],
                   duration_us=increases["durationUs"], queue_us=increases["queueUs"])

    @property
    def requests(self) -> float:
        return self.success + self.failure

    @property
    def error_rate(self) -> float | None:
        """failures / requests; None without requests."""
        return self.failure / self.requests if self.requests > 0 else None

    @property
    def latency_ms(self) -> float | None:
        """Mean request duration of the successful requests, ms; None without any."""
        return self.duration_us / self.success / 1000.0 if self.success > 0 else None

    @property
    def queue_ms(self) -> float | None:
        """Mean queue time per successful request, ms; None without any."""
        return self.queue_us / self.success / 1000.0 if self.success > 0 else None
