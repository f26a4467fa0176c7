"""The predictive floor on a real control plane, from a week and more of history in a real Prometheus.

Before Prometheus starts, eight days of Triton's request counter for a fake ranker pod are backfilled into
its TSDB with promtool (peakserve_harness.metrics.backfill): 20 requests/s, except a daily peak of
90 requests/s for 1.5 h either side of this moment's time of day, with +-5% noise per 5 minutes. So the
last half hour, yesterday's, the day before's and last week's are all inside the peak, and the forecast for
the next 10 minutes is ~90 requests/s whichever season it takes: at 70% of 50 requests/s per replica,
ceil(90 / 35) = 3 replicas (the noise cannot move it below 70 or above 105). The operator reads that
history from the Prometheus the spec names, reports the forecast, the floor and a backtested error in
status.autoscaling.predictive, sets the HPA's minReplicas to the floor, and the real HPA controller scales
the Deployment up to it. A second object, pointed at a Prometheus without history, gets no floor and a
status that says why.
"""

from __future__ import annotations

import math
import time

import pytest

from peakserve_harness.metrics.backfill import DailyPeak, backfill_request_history
from peakserve_harness.metrics.prometheus import PrometheusProcess

from .cluster import md, wait_for

pytestmark = pytest.mark.integration

BASE, PEAK = 20.0, 90.0            # requests/s, all pods together
CAPACITY, UTILIZATION = 50, 70     # one replica's requests/s at the SLO; percent of it each pod is aimed at
MIN, MAX = 1, 8
LEAD = 600                         # the forecast window
POD = "ranker-7d9f8c6b5-abcde"     # as the Deployment's ReplicaSet would name it
QUERY = 'sum(rate(nv_inference_request_success{{namespace="{ns}",pod=~"ranker-[a-z0-9]+-[a-z0-9]+"}}[5m]))'


def predictive_spec(prometheus_url: str) -> dict:
    return {"engine": "hpa", "minReplicas": MIN, "maxReplicas": MAX, "metric": "requestRate",
            "targetUtilization": UTILIZATION, "capacity": {"requestsPerSecond": CAPACITY, "learn": False},
            "prometheusAddress": prometheus_url, "leadTimeSeconds": LEAD,
            "predictive": {"enabled": True, "historyDays": 8}}


def predictive_status(kubectl, ns: str, name: str) -> dict:
    obj = kubectl.get("modeldeployment", name, ns) or {}
    return ((obj.get("status") or {}).get("autoscaling") or {}).get("predictive") or {}


def hpa_floor(kubectl, ns: str, name: str) -> int | None:
    hpa = kubectl.get("hpa", name, ns)
    return hpa and hpa["spec"].get("minReplicas")


@pytest.fixture
def history(ns, tmp_path):
    """A Prometheus (10 d retention) holding 8 days of the ranker's request rate in ``ns``."""
    prom = PrometheusProcess(tmp_path / "prometheus", retention="10d")
    done = backfill_request_history(prom.tsdb, ns, [POD], DailyPeak(center=time.time(), base=BASE, peak=PEAK),
                                    days=8)
    with prom:
        yield prom, done


def test_history_is_in_prometheus(history, ns):
    """What the operator will read: 8 days of the shape, up to now."""
    prom, done = history
    now = time.time()
    data = prom._api("query_range", {"query": QUERY.format(ns=ns), "start": f"{now - 8 * 86400:.0f}",
                                     "end": f"{now:.0f}", "step": "300"})
    values = [(float(t), float(v)) for t, v in data["result"][0]["values"]]
    assert now - values[0][0] > 7.9 * 86400 and now - values[-1][0] < 600
    at = {round((now - t) / 3600, 1): v for t, v in values}

    def near(hours_ago: float) -> float:
        return min(at.items(), key=lambda kv: abs(kv[0] - hours_ago))[1]

    for hours_ago in (0.25, 24, 48, 168):     # inside the daily peak
        assert 0.85 * PEAK < near(hours_ago) < 1.15 * PEAK, (hours_ago, near(hours_ago))
    for hours_ago in (6, 12, 30, 100):        # outside it
        assert 0.85 * BASE < near(hours_ago) < 1.15 * BASE, (hours_ago, near(hours_ago))


def test_floor_from_a_week_of_history(kubectl, operator, ns, history, tmp_path):
    prom, _ = history
    with PrometheusProcess(tmp_path / "empty") as empty:
        kubectl.apply([md("ranker", ns, autoscaling=predictive_spec(prom.url)),
                       md("scorer", ns, autoscaling=predictive_spec(empty.url))])
        status = wait_for(lambda: (s := predictive_status(kubectl, ns, "ranker")).get("floor") and s,
                          timeout=90, interval=1, what="a predictive floor in status")
        print(f"predictive status: {status}")
        forecast = status["forecastRequestsPerSecond"]
        assert 0.8 * PEAK <= forecast <= 1.2 * PEAK, status
        expected = min(MAX, math.ceil(forecast / (UTILIZATION / 100 * CAPACITY) - 1e-9))
        assert status["floor"] == expected == 3, status
        assert status["historyHours"] >= 7 * 24, status
        assert status.get("mapePercent") is not None and 0 <= status["mapePercent"] < 100, status
        assert status.get("message"), status
        wait_for(lambda: hpa_floor(kubectl, ns, "ranker") == expected, timeout=60,
                 what=f"the HPA's minReplicas at the floor {expected}")
        # The HPA controller raises a Deployment below minReplicas without reading any metric.
        wait_for(lambda: ((kubectl.get("deployment", "ranker", ns) or {}).get("spec") or {}).get("replicas")
                 == expected, timeout=60, interval=1, what="the Deployment scaled to the floor")

        # No history: no floor, and the status says so.
        none = wait_for(lambda: (s := predictive_status(kubectl, ns, "scorer")).get("message") and s,
                        timeout=60, interval=1, what="the second object's predictive status")
        print(f"without history: {none}")
        assert not none.get("floor"), none
        assert none.get("forecastRequestsPerSecond") is None, none
        assert "history" in none["message"].lower(), none
        assert hpa_floor(kubectl, ns, "scorer") == MIN
