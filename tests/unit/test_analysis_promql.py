"""peakserve.analysis.promql (the queries, the parsing of recorded Prometheus answers, the figures of a
side) and peakserve.analysis.prometheus (the HTTP call, with its opener replaced: no network)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from peakserve.analysis import prometheus
from peakserve.analysis.errors import AnalysisError
from peakserve.analysis.promql import (COUNTERS, SideMetrics, increase_query, parse_value, quote, selector,
                                       side_queries)

# Recorded from Prometheus 3.x's /api/v1/query.
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1731312000.123, "1234.5678"]}]}}
VECTOR_BY_POD = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"pod": "ranker-canary-7d9c-abcde"}, "value": [1731312000.123, "10"]},
    {"metric": {"pod": "ranker-canary-7d9c-fghij"}, "value": [1731312000.123, "2.5"]}]}}
EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
SCALAR = {"status": "success", "data": {"resultType": "scalar", "result": [1731312000.123, "42"]}}
BAD_DATA = {"status": "error", "errorType": "bad_data",
            "error": 'invalid parameter "query": 1:27: parse error: unexpected "}"'}


# ------------------------------------------------------------------------------------------ queries

def test_quote_escapes_promql_strings():
    assert quote("ranker") == '"ranker"'
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert quote(r"ranker-\d+") == r'"ranker-\\d+"'


def test_increase_query_sums_the_side_over_the_window():
    assert selector("shop", "ranker-canary-.*", "ranker") == \
        '{namespace="shop", pod=~"ranker-canary-.*", model="ranker"}'
    assert increase_query("nv_inference_request_success", "shop", "ranker-[a-z0-9]+-[a-z0-9]+", "ranker", 120) == (
        'sum(increase(nv_inference_request_success{namespace="shop", pod=~"ranker-[a-z0-9]+-[a-z0-9]+", '
        'model="ranker"}[120s]))')


def test_side_queries_one_per_counter():
    queries = side_queries("shop", "p.*", "m", 300)
    assert set(queries) == {"success", "failure", "durationUs", "queueUs"}
    for key, metric in COUNTERS.items():
        assert queries[key].startswith(f"sum(increase({metric}{{") and queries[key].endswith("[300s]))")
    assert COUNTERS["queueUs"] == "nv_inference_queue_duration_us"
    assert COUNTERS["durationUs"] == "nv_inference_request_duration_us"


# ------------------------------------------------------------------------------------------ answers

def test_parse_recorded_answers():
    assert parse_value(VECTOR) == 1234.5678
    assert parse_value(VECTOR_BY_POD) == 12.5   # a query without sum() is summed here too
    assert parse_value(EMPTY) == 0.0            # no series: nothing served in the window
    assert parse_value(SCALAR) == 42.0


@pytest.mark.parametrize("answer, message", [
    (BAD_DATA, 'Prometheus query failed: bad_data: invalid parameter "query"'),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix result"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1.0]}]}}, "cannot be read"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1.0, "NaN"]}]}}, "nan"),
    ([], "other than a JSON object"),
])
def test_answers_that_cannot_be_used(answer, message):
    with pytest.raises(AnalysisError, match=message.replace("(", r"\(")):
        parse_value(answer)


# ------------------------------------------------------------------------------------------ a side's figures

def test_side_metrics_from_increases():
    side = SideMetrics.from_increases({"success": 990.0, "failure": 10.0, "durationUs": 4_950_000.0,
                                       "queueUs": 99_000.0})
    assert side.requests == 1000.0
    assert side.error_rate == 0.01
    assert side.latency_ms == pytest.approx(5.0)     # 4.95 s over 990 successes
    assert side.queue_ms == pytest.approx(0.1)


def test_side_without_traffic_has_no_rates():
    idle = SideMetrics(success=0.0, failure=0.0, duration_us=0.0, queue_us=0.0)
    assert (idle.requests, idle.error_rate, idle.latency_ms, idle.queue_ms) == (0.0, None, None, None)
    failing = SideMetrics(success=0.0, failure=4.0, duration_us=0.0, queue_us=0.0)
    assert failing.error_rate == 1.0 and failing.latency_ms is None


# ------------------------------------------------------------------------------------------ the HTTP call

class FakeOpener:
    """Answers each query from `answers` (metric name -> JSON) and records the URLs asked."""

    def __init__(self, answers: dict[str, dict], error: Exception | None = None):
        self.answers, self.error, self.urls = answers, error, []

    def open(self, url, timeout):
        self.urls.append((url, timeout))
        if self.error:
            raise self.error
        promql = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
        metric = next((m for m in self.answers if m in promql), None)
        return io.BytesIO(json.dumps(self.answers.get(metric, EMPTY)).encode())


def _answer(value: float) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [1731312000.0, str(value)]}]}}


def test_side_metrics_over_http(monkeypatch):
    opener = FakeOpener({"nv_inference_request_success": _answer(200), "nv_inference_request_failure": EMPTY,
                         "nv_inference_request_duration_us": _answer(2_000_000),
                         "nv_inference_queue_duration_us": _answer(20_000)})
    monkeypatch.setattr(prometheus, "_OPENER", opener)
    side = prometheus.side_metrics("http://prometheus.monitoring.svc:9090/", "shop", "ranker-canary-.*", "ranker",
                                   120)
    assert (side.requests, side.error_rate, side.latency_ms, side.queue_ms) == (200.0, 0.0, 10.0, 0.1)
    assert len(opener.urls) == 4 and all(timeout == 10.0 for _, timeout in opener.urls)
    url = urllib.parse.urlsplit(opener.urls[0][0])
    assert (url.scheme, url.netloc, url.path) == ("http", "prometheus.monitoring.svc:9090", "/api/v1/query")
    assert urllib.parse.parse_qs(url.query)["query"][0] == side_queries("shop", "ranker-canary-.*", "ranker",
                                                                        120)["success"]


def test_a_path_prefix_is_kept(monkeypatch):
    opener = FakeOpener({})
    monkeypatch.setattr(prometheus, "_OPENER", opener)
    prometheus.query("https://monitoring.example/prometheus", "up")
    assert opener.urls[0][0] == "https://monitoring.example/prometheus/api/v1/query?query=up"


def test_prometheus_errors(monkeypatch):
    http_error = urllib.error.HTTPError("http://p/api/v1/query", 400, "Bad Request", {},
                                        io.BytesIO(json.dumps(BAD_DATA).encode()))
    monkeypatch.setattr(prometheus, "_OPENER", FakeOpener({}, http_error))
    assert prometheus.query("http://p", "sum(") == BAD_DATA   # Prometheus' own error, for parse_value to report

    unreachable = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    monkeypatch.setattr(prometheus, "_OPENER", FakeOpener({}, unreachable))
    with pytest.raises(AnalysisError, match=r"Prometheus http://p:9090 unreachable: .*Connection refused"):
        prometheus.query("http://user:secret@p:9090", "up")   # credentials never reach the message

    gateway = urllib.error.HTTPError("http://p/api/v1/query", 502, "Bad Gateway", {}, io.BytesIO(b"<html>"))
    monkeypatch.setattr(prometheus, "_OPENER", FakeOpener({}, gateway))
    with pytest.raises(AnalysisError, match="answered HTTP 502"):
        prometheus.query("http://p", "up")


def test_no_proxy_from_the_environment():
    # build_opener adds the environment's ProxyHandler unless one is given; the empty one given
    # handles no scheme, so the opener has no proxy handler at all.
    assert not [h for h in prometheus._OPENER.handlers if isinstance(h, urllib.request.ProxyHandler)]
