"""The one HTTP call of the metric checks: an instant query against Prometheus' HTTP API.

urllib only (the model-builder image has no requests/aiohttp need here), a 10 s timeout, and never
through a proxy from the environment: Prometheus is an in-cluster Service, as Triton is. The
PromQL and the parsing are in promql.py; this module only moves bytes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..redact import redact_uri
from .errors import AnalysisError
from .promql import SideMetrics, parse_value, side_queries

TIMEOUT_S = 10.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def query(base_url: str, promql: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """GET ``BASE/api/v1/query?query=...``; Prometheus' JSON answer, also for its 4xx/5xx errors."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    where = redact_uri(base_url)
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as err:  # bad_data (400), execution errors (422, 503) carry JSON
        body = err.read()
        try:
            return json.loads(body)
        except ValueError:
            raise AnalysisError(f"Prometheus {where} answered HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise AnalysisError(f"Prometheus {where} unreachable: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise AnalysisError(f"Prometheus {where} answered something other than JSON") from None


def side_metrics(base_url: str, namespace: str, pod_regex: str, model: str, window_seconds: int,
                 timeout_s: float = TIMEOUT_S) -> SideMetrics:
    """The side's counter increases over the window, one query each."""
    queries = side_queries(namespace, pod_regex, model, window_seconds)
    return SideMetrics.from_increases({key: parse_value(query(base_url, q, timeout_s))
                                       for key, q in queries.items()})
