"""The capacity-proportional signal and the predictive floor, as data: the target in force (spec capacity, learned,
unknown), the forecast floor from a synthetic request-rate history, and when observe reads Prometheus at all."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from peakserve.api.timestamps import rfc3339
from peakserve.api.validation import parse_spec
from peakserve.cluster.prometheus import parse_matrix, query_range
from peakserve.decide.capacity_target import capacity_status, resolve_signal
from peakserve.decide.scaling import decide_scaling
from peakserve.decide.snapshot import MetricsRead, RangeResult, Snapshot, metrics_reads

# The helpers of tests/conftest.py, by path: a bare `import conftest` may find another suite's conftest.
_root = importlib.util.spec_from_file_location("peakserve_tests_root", Path(__file__).parents[1] / "conftest.py")
_conftest = sys.modules.setdefault("peakserve_tests_root", importlib.util.module_from_spec(_root))
_root.loader.exec_module(_conftest)
MINIMAL_SPEC, body_for, merge = _conftest.MINIMAL_SPEC, _conftest.body_for, _conftest.merge

NOW = dt.datetime(2026, 11, 10, 9, 30, tzinfo=dt.timezone.utc)
DAY = 86400


def autoscaling(**fields: Any):
    """targetUtilization 70 unless a case says otherwise (the tables below do the arithmetic at 70%)."""
    return parse_spec(merge(MINIMAL_SPEC, {"autoscaling": {"maxReplicas": 40, "targetUtilization": 70,
                                                           **fields}})).autoscaling


def status_of(**autoscaling_status: Any) -> dict[str, Any]:
    return {"autoscaling": autoscaling_status}


# --- the target in force ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fields,metric,target,text", [
    ({"capacity": {"requestsPerSecond": 70}}, "requestRate", 49, "49 requests/s per pod (70% of 70 requests/s)"),
    ({"capacity": {"requestsPerSecond": 70}, "targetUtilization": 50}, "requestRate", 35,
     "35 requests/s per pod (50% of 70 requests/s)"),
    # concurrency from the rate by Little's law: 70 requests/s x 0.1 s = 7 in flight
    ({"metric": "concurrency", "capacity": {"requestsPerSecond": 70}}, "concurrency", 4.9,
     "4.9 requests in flight per pod (70% of 7)"),
    ({"metric": "concurrency", "capacity": {"concurrency": 8, "sloMilliseconds": 200}}, "concurrency", 5.6,
     "5.6 requests in flight per pod (70% of 8)"),
    # the other metrics: their own target, or its default, in their unit
    ({"metric": "queueTime", "target": 20000}, "queueTime", 20000, "20000 us of queue time per request"),
    ({"metric": "pendingRequests"}, "pendingRequests", 4, "4 pending requests per pod"),
    ({"metric": "gpuUtilization"}, "gpuUtilization", 70, "70% GPU utilization"),
])
def test_target_in_force(fields, metric, target, text):
    spec = autoscaling(**fields)
    signal = resolve_signal(spec, capacity_status(spec, {}, None, NOW))
    assert (signal.metric, signal.target, signal.text) == (metric, pytest.approx(target), text)


def test_unknown_capacity_falls_back_to_queue_time_and_says_so():
    spec = autoscaling()   # requestRate by default, no capacity in the spec, nothing learned yet
    capacity = capacity_status(spec, {}, None, NOW)
    signal = resolve_signal(spec, capacity)
    assert capacity.source == "unknown" and "queueTime at 50000 us" in capacity.message
    assert (signal.metric, signal.target) == ("queueTime", 50000) and "fallback" in signal.text
    assert signal.rate_per_replica is None


def test_learning_off_without_a_capacity_says_why():
    spec = autoscaling(capacity={"learn": False})
    capacity = capacity_status(spec, {}, None, NOW)
    assert capacity.source == "unknown" and "learn is off" in capacity.message


def windows(*pods: tuple[str, list[tuple[float, float]]]) -> dict[str, RangeResult]:
    """Per pod: (requests/s, in flight) per 5-minute window -> the two answers observe would get."""
    rate = tuple(({"pod": p}, tuple((NOW.timestamp() - 300 * i, r) for i, (r, _) in enumerate(w))) for p, w in pods)
    flight = tuple(({"pod": p}, tuple((NOW.timestamp() - 300 * i, c) for i, (_, c) in enumerate(w)))
                   for p, w in pods)
    return {"pod_rate": RangeResult(rate), "pod_in_flight": RangeResult(flight)}


def test_capacity_is_learned_within_the_slo_and_only_rises():
    spec = autoscaling(capacity={"sloMilliseconds": 100})
    # 12 busy windows; at 80 requests/s with 12 in flight the latency is 150 ms (over the SLO), 60 requests/s
    # with 3 in flight is 50 ms (within)
    busy = [(60.0, 3.0)] * 11 + [(80.0, 12.0)]
    learned = capacity_status(spec, windows(("ranker-5d-a", busy)), None, NOW)
    assert (learned.source, learned.requests_per_second, learned.concurrency) == ("learned", 60.0, 3.0)
    assert learned.samples == 12 and learned.within_slo == 11 and learned.learned_at == rfc3339(NOW)
    signal = resolve_signal(spec, learned)
    assert signal.text == "42 requests/s per pod (70% of 60 requests/s)"
    # memory: a later, quieter day learns less; the higher capacity stays
    quieter = capacity_status(spec, windows(("ranker-5d-b", [(20.0, 1.0)] * 12)),
                              learned.model_dump(by_alias=True, exclude_none=True), NOW + dt.timedelta(hours=1))
    assert quieter.requests_per_second == 60.0 and "kept" in quieter.message
    # and a pass that read nothing keeps it as it was
    kept = capacity_status(spec, {}, quieter.model_dump(by_alias=True, exclude_none=True), NOW)
    assert kept == quieter


def test_prometheus_error_keeps_the_learned_capacity():
    spec = autoscaling()
    before = {"source": "learned", "requestsPerSecond": 50.0, "concurrency": 2.0, "learnedAt": "2026-11-10T09:00:00Z"}
    failed = {"pod_rate": RangeResult(error="URLError: refused"), "pod_in_flight": RangeResult(error="x")}
    capacity = capacity_status(spec, failed, before, NOW)
    assert capacity.requests_per_second == 50.0 and "refused" in capacity.message
    assert capacity.learned_at == rfc3339(NOW)   # tried now: not again before 300 s


# --- the predictive floor --------------------------------------------------------------------------------


def seasonal(days: float, base: float = 200.0, swing: float = 150.0, end: dt.datetime = NOW) -> RangeResult:
    """A daily sine of request rates every 300 s for `days` up to `end`: peak base + swing at 12:00 UTC."""
    stop = end.timestamp() // 300 * 300
    points = int(days * DAY / 300)
    samples = tuple((stop - 300 * i, base + swing * math.sin(2 * math.pi * ((stop - 300 * i) % DAY - 6 * 3600) / DAY))
                    for i in range(points, -1, -1))
    return RangeResult((({}, samples),))


def decide(spec, previous=None, metrics=None, now=NOW):
    return decide_scaling(spec, False, None, previous or {}, now, metrics)


PREDICTIVE = {"capacity": {"requestsPerSecond": 50}, "leadTimeSeconds": 600}   # target 35 requests/s per replica


def test_too_little_history_raises_no_floor_and_says_so():
    d = decide(autoscaling(**PREDICTIVE), metrics={"request_history": seasonal(0.5)})
    assert d.status.predictive.floor == 0 and "no forecast yet" in d.status.predictive.message
    assert d.status.floor == 1 and d.plan.floor == 1 and d.status.predictive.evaluated_at == rfc3339(NOW)


def test_a_week_of_seasonal_history_gives_a_floor():
    noon = NOW.replace(hour=11, minute=50)   # the next 15 minutes (lead 600 + refresh 300) reach the daily peak
    d = decide(autoscaling(**PREDICTIVE), metrics={"request_history": seasonal(8, end=noon)}, now=noon)
    p = d.status.predictive
    assert p.forecast_requests_per_second == pytest.approx(350, rel=0.02)
    assert p.floor == math.ceil(p.forecast_requests_per_second / 35) == 10
    assert d.plan.floor == 10 and d.status.floor == 10 and d.plan.predictive_floor == 10
    assert p.window_seconds == 900 and p.history_hours >= 8 * 24 - 1
    assert p.mape_percent is not None and p.mape_percent < 5   # a clean sine forecasts itself
    assert d.wake_at == noon + dt.timedelta(seconds=300)
    assert d.status.metric == "requestRate" and d.plan.target == 35


def test_the_forecast_never_lowers_a_schedule_floor():
    noon = NOW.replace(hour=11, minute=50)
    schedule = {"name": "flash", "start": "2026-11-10T11:00:00", "end": "2026-11-10T13:00:00", "minReplicas": 30}
    d = decide(autoscaling(**PREDICTIVE, schedules=[schedule]), metrics={"request_history": seasonal(8, end=noon)},
               now=noon)
    assert d.status.predictive.floor == 10 and d.status.floor == 30 and d.plan.floor == 30


def test_the_forecast_floor_is_capped_at_max_replicas():
    noon = NOW.replace(hour=11, minute=50)
    d = decide(autoscaling(**PREDICTIVE, maxReplicas=6), metrics={"request_history": seasonal(8, end=noon)}, now=noon)
    assert d.status.predictive.floor == 6 and d.plan.floor == 6
    assert "capped at maxReplicas" in d.status.predictive.message


def test_between_forecasts_the_last_floor_is_reused_until_stale():
    spec = autoscaling(**PREDICTIVE)
    made = {"floor": 9, "forecastRequestsPerSecond": 310.0, "evaluatedAt": rfc3339(NOW - dt.timedelta(seconds=200)),
            "message": "peak 310"}
    fresh = decide(spec, status_of(predictive=made))
    assert fresh.status.predictive.floor == 9 and fresh.plan.floor == 9
    assert fresh.wake_at == NOW + dt.timedelta(seconds=100)   # the next forecast is still ahead
    stale = decide(spec, status_of(predictive={**made, "evaluatedAt": rfc3339(NOW - dt.timedelta(seconds=601))}))
    assert stale.status.predictive.floor == 0 and stale.plan.floor == 1 and "stale" in stale.status.predictive.message
    assert stale.wake_at is None   # no wake-up in the past: nothing to spin on


def test_nothing_is_forecast_without_a_capacity_or_for_other_metrics():
    unknown = decide(autoscaling(), metrics={"request_history": seasonal(8)})
    assert unknown.status.predictive.floor == 0 and "capacity is unknown" in unknown.status.predictive.message
    queue = decide(autoscaling(metric="queueTime"))
    assert "not proportional to load" in queue.status.predictive.message and queue.wake_at is None
    off = decide(autoscaling(**PREDICTIVE, predictive={"enabled": False}))
    assert off.status.predictive is None and off.plan.floor == 1


def test_prometheus_error_raises_no_floor():
    d = decide(autoscaling(**PREDICTIVE), metrics={"request_history": RangeResult(error="URLError: timed out")})
    assert d.status.predictive.floor == 0 and "timed out" in d.status.predictive.message


# --- when observe reads Prometheus -----------------------------------------------------------------------


def snapshot(spec: dict[str, Any], status: dict[str, Any] | None = None) -> tuple[Snapshot, Any]:
    body = body_for(merge(MINIMAL_SPEC, spec))
    body["metadata"]["namespace"] = "shop"
    body["status"] = status or {}
    return Snapshot(body=body), parse_spec(body["spec"])


def slots(spec, status=None, now=NOW) -> list[str]:
    snap, parsed = snapshot(spec, status)
    return [r.slot for r in metrics_reads(snap, parsed, now)]


def ago(seconds: int) -> str:
    return rfc3339(NOW - dt.timedelta(seconds=seconds))


@pytest.mark.parametrize("spec,status,expected", [
    ({}, None, []),                                                          # no autoscaling
    ({"autoscaling": {"maxReplicas": 4, "metric": "queueTime"}}, None, []),  # no capacity metric
    # requestRate without a capacity: learn it, and forecast (the capacity may be known after learning)
    ({"autoscaling": {"maxReplicas": 4}}, None, ["request_history", "pod_rate", "pod_in_flight"]),
    ({"autoscaling": {"maxReplicas": 4}},
     status_of(predictive={"evaluatedAt": ago(120)}, capacity={"source": "unknown", "learnedAt": ago(120)}), []),
    ({"autoscaling": {"maxReplicas": 4}},
     status_of(predictive={"evaluatedAt": ago(300)}, capacity={"source": "unknown", "learnedAt": ago(120)}),
     ["request_history"]),
    # a capacity in the spec: nothing to learn
    ({"autoscaling": {"maxReplicas": 4, "capacity": {"requestsPerSecond": 50}}}, None, ["request_history"]),
    ({"autoscaling": {"maxReplicas": 4, "capacity": {"requestsPerSecond": 50}, "predictive": {"enabled": False}}},
     None, []),
    # nothing known and nothing to learn: no read
    ({"autoscaling": {"maxReplicas": 4, "capacity": {"learn": False}}}, None, []),
], ids=["fixed-replicas", "queue-time", "first-pass", "not-due", "forecast-due", "spec-capacity", "predictive-off",
        "nothing-to-learn"])
def test_prometheus_is_read_only_when_due(spec, status, expected):
    assert slots(spec, status) == expected


def test_the_reads_select_the_deployments_pods_over_the_history():
    snap, parsed = snapshot({"autoscaling": {"maxReplicas": 4, "predictive": {"historyDays": 35}}})
    history, rate, flight = metrics_reads(snap, parsed, NOW)
    sel = 'namespace="shop",pod=~"ranker-[a-z0-9]+-[a-z0-9]+"'
    assert history.query == f"sum(rate(nv_inference_request_success{{{sel}}}[5m]))"
    assert history.address == "http://prometheus-operated.monitoring.svc:9090"
    assert history.step == 300 and (history.end - history.start) / history.step + 1 < 11000
    assert rate.query.startswith("sum by (pod) (rate(nv_inference_request_success{")
    assert flight.query.endswith("[5m])) / 1e6") and flight.end - flight.start == DAY


# --- cluster/prometheus.py -------------------------------------------------------------------------------


def test_parse_matrix():
    answer = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"pod": "a"}, "values": [[1000, "1.5"], [1300, "NaN"]]}]}}
    (labels, samples), = parse_matrix(answer).series
    assert labels == {"pod": "a"} and samples[0] == (1000.0, 1.5) and math.isnan(samples[1][1])
    assert parse_matrix({"status": "error", "errorType": "bad_data", "error": "parse error"}).error == \
        "bad_data: parse error"


class _Prometheus(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        # Recorded before answering: the client may read the answer before this thread runs again.
        _Prometheus.paths.append(self.path)
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1, "2"]]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


_Prometheus.paths = []


def test_query_range_asks_prometheus_and_captures_errors():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        read = MetricsRead("request_history", f"http://127.0.0.1:{server.server_address[1]}", "up", 0, 600, 300)
        assert query_range(read).series == (({}, ((1.0, 2.0),)),)
        assert _Prometheus.paths[-1].startswith("/api/v1/query_range?query=up&start=0.000&end=600.000&step=300s")
    finally:
        server.shutdown()
        server.server_close()
    gone = query_range(MetricsRead("x", "http://127.0.0.1:9", "up", 0, 600, 300), timeout=2)
    assert gone.series == () and gone.error


class _FakeKube:
    """The cluster reads of observe answer 'nothing there'; Discovery asks `serves`."""

    def get(self, *args):
        return None

    def list(self, *args):
        return []

    def serves(self, group_version):
        return False


def test_observe_reads_prometheus_only_when_due_and_stops_after_a_failure():
    from peakserve.cluster.observe import Discovery, observe

    kube = _FakeKube()
    body = body_for(merge(MINIMAL_SPEC, {"autoscaling": {"maxReplicas": 4, "prometheusAddress": "http://127.0.0.1:9"}}))
    snap = observe(kube, body, parse_spec(body["spec"]), "drift", Discovery(kube), NOW)
    assert set(snap.metrics) == {"request_history", "pod_rate", "pod_in_flight"} and "metrics" in snap.read
    errors = {a.error for a in snap.metrics.values()}
    assert len(errors) == 1 and None not in errors   # one refused connection, reused for the other reads
    body["status"] = {"autoscaling": {"predictive": {"evaluatedAt": rfc3339(NOW)},
                                      "capacity": {"source": "unknown", "learnedAt": rfc3339(NOW)}}}
    snap = observe(kube, body, parse_spec(body["spec"]), "drift", Discovery(kube), NOW + dt.timedelta(seconds=60))
    assert snap.metrics == {} and "metrics" not in snap.read
