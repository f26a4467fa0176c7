"""Prometheus range queries for the reads decide/snapshot.py plans (metrics_reads). Reads only.

Plain urllib (the operator image has no HTTP library beyond the Kubernetes client), a short timeout, and
every failure returned as a message in the RangeResult: Prometheus being away never fails a reconcile pass,
it only leaves the capacity and the forecast as they were (status says why).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..decide.snapshot import MetricsRead, RangeResult

TIMEOUT_SECONDS = 5.0


def _value(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def parse_matrix(answer: dict[str, Any]) -> RangeResult:
    """A query_range answer (resultType matrix) as a RangeResult."""
    if answer.get("status") != "success":
        return RangeResult(error=f"{answer.get('errorType') or 'error'}: {answer.get('error') or 'no result'}")
    data = answer.get("data") or {}
    if data.get("resultType") != "matrix":
        return RangeResult(error=f"expected a matrix, got {data.get('resultType')!r}")
    series = []
    for item in data.get("result") or []:
        samples = tuple((float(t), _value(v)) for t, v in item.get("values") or [])
        series.append((dict(item.get("metric") or {}), samples))
    return RangeResult(series=tuple(series))


def query_range(read: MetricsRead, timeout: float = TIMEOUT_SECONDS) -> RangeResult:
    params = urllib.parse.urlencode({"query": read.query, "start": f"{read.start:.3f}", "end": f"{read.end:.3f}",
                                     "step": f"{read.step:g}s"})
    url = f"{read.address.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only: the schema's pattern)
            return parse_matrix(json.loads(resp.read()))
    except urllib.error.HTTPError as err:  # Prometheus answers 400/422/503 with a JSON error body
        try:
            return parse_matrix(json.loads(err.read()))
        except (ValueError, OSError):
            return RangeResult(error=f"HTTP {err.code} {err.reason}")
    except (urllib.error.URLError, OSError, ValueError) as err:  # unreachable, timeout, not JSON
        reason = getattr(err, "reason", None) or err
        return RangeResult(error=f"{type(err).__name__}: {reason}")
