"""KEDA, real and live, on the dev control plane: the ScaledObject peakserve renders for `engine: keda` is
accepted by KEDA (built from github.com/kedacore/keda/v2, see controlplane/keda.py), a promotion window's
cron trigger moves the Deployment on the real clock through the whole path (KEDA operator -> gRPC metrics
service -> KEDA's external.metrics.k8s.io server -> the aggregation layer -> the HPA controller), and a
broken trigger reaches the ModelDeployment as Degraded=True (AutoscalerFailing) with KEDA's own words.

The Prometheus trigger queries the harness's real Prometheus (scraping nothing here: the query is empty and
KEDA reads it as 0), so only the cron trigger moves replicas. KEDA's cron is minute-granular: the window
starts at the next whole minute at least LEAD_IN seconds away, with leadTimeSeconds 0.

The closed loop runs through KEDA too: real tritonservers behind the KWOK pods (PodServers, as in
test_autoscaling_loop), scraped by the same Prometheus the requestRate trigger queries, under a bounded
open-loop load; KEDA's HPA must scale the Deployment up while the load runs and back down after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
import time

import pytest

from peakserve.cluster.client import Kube
from peakserve.loadgen import run_load
from peakserve_harness.controlplane.keda import Keda
from peakserve_harness.loopback import free_port
from peakserve_harness.metrics.prometheus import PrometheusProcess
from peakserve_harness.pods.triton_pods import PodServers
from peakserve_harness.triton.install import ensure_installed

from .cluster import condition, md, wait_for
from .test_autoscaling_loop import GPU_MS, build_repository, deployment_replicas, sample_replicas, spec_overrides

pytestmark = [pytest.mark.integration, pytest.mark.autoscaling_loop, pytest.mark.timeout(480)]

LEAD_IN = 60          # seconds at least between applying the spec and the window's first minute
WINDOW_MINUTES = 2    # the promotion window, whole minutes (KEDA's cron granularity)
FLOOR = 3             # the schedule's minReplicas
TARGET_US = 50_000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    with PrometheusProcess(tmp_path_factory.mktemp("keda-prometheus")) as prom:
        yield prom


@pytest.fixture(scope="module")
def keda(cluster, kubectl, tmp_path_factory):
    """KEDA for this module. The namespaces of its tests (function fixtures) are deleted first, while KEDA
    still runs and takes its finalizers off; then the CRDs go, so later tests see no keda.sh (engine auto)."""
    k = Keda(cluster, tmp_path_factory.mktemp("keda"), log=say)
    k.start()
    yield k
    k.stop(remove_crds=True)


def autoscaling(prometheus_address: str, **extra) -> dict:
    return {"engine": "keda", "metric": "queueTime", "target": TARGET_US, "minReplicas": 1, "maxReplicas": 4,
            "prometheusAddress": prometheus_address,
            # Down as soon as the cron metric drops: a test cannot wait the default 300 s window.
            "scaleDown": {"stabilizationWindowSeconds": 0, "maxPercent": 100, "maxPods": 4, "periodSeconds": 15},
            **extra}


def replicas(kubectl, ns) -> tuple[int, int]:
    dep = kubectl.get("deployment", "ranker", ns) or {}
    return int((dep.get("spec") or {}).get("replicas") or 0), int((dep.get("status") or {}).get("readyReplicas") or 0)


def _local(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def test_keda_accepts_the_scaled_object_and_its_cron_trigger_scales_on_the_real_clock(kubectl, operator, ns, keda,
                                                                                       prometheus):
    now = dt.datetime.now(dt.timezone.utc)
    start = (now + dt.timedelta(seconds=LEAD_IN + 59)).replace(second=0, microsecond=0)
    end = start + dt.timedelta(minutes=WINDOW_MINUTES)
    say(f"window {start:%H:%M:%S} - {end:%H:%M:%S} UTC")
    kubectl.apply(md("ranker", ns, autoscaling=autoscaling(
        prometheus.url, leadTimeSeconds=0,
        schedules=[{"name": "flash-sale", "start": _local(start), "end": _local(end), "timezone": "UTC",
                    "minReplicas": FLOOR}])))

    # (a) KEDA accepts what peakserve rendered: the ScaledObject is Ready and KEDA created its own HPA.
    so = wait_for(lambda: kubectl.get("scaledobject", "ranker", ns), timeout=30, what="the ScaledObject")
    triggers = {t["type"]: t for t in so["spec"]["triggers"]}
    assert set(triggers) == {"prometheus", "cron"}
    assert triggers["cron"]["metadata"]["start"] == f"{start.minute} {start.hour} {start.day} {start.month} *"
    wait_for(lambda: condition(kubectl.get("scaledobject", "ranker", ns), "Ready").get("status") == "True",
             timeout=60, what="the ScaledObject Ready=True")
    hpa = wait_for(lambda: kubectl.get("hpa", "keda-hpa-ranker", ns), timeout=30, what="KEDA's HPA keda-hpa-ranker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ranker" and hpa["spec"]["minReplicas"] == 1
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"External"}
    # The HPA controller reads KEDA's metrics through the aggregation layer (ScalingActive=True).
    wait_for(lambda: condition(kubectl.get("hpa", "keda-hpa-ranker", ns), "ScalingActive").get("status") == "True",
             timeout=60, what="keda-hpa-ranker ScalingActive=True (external metrics served by KEDA)")
    assert kubectl.get("hpa", "ranker", ns) is None, "one autoscaler: peakserve's own HPA is not there"
    cron_metric = next(m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]
                       if "cron" in m["external"]["metric"]["name"])
    mdep = kubectl.get("modeldeployment", "ranker", ns)
    assert mdep["status"]["autoscaling"]["engine"] == "keda"
    assert condition(mdep, "Degraded").get("status") == "False", condition(mdep, "Degraded")

    # (b) Before the window: the cron metric is 0 and replicas stay at the spec's minimum.
    assert dt.datetime.now(dt.timezone.utc) < start - dt.timedelta(seconds=5), "setup took longer than the lead-in"
    items = keda.external_metric(ns, cron_metric, "ranker")
    assert items and items[0]["value"] == "0", items
    time.sleep(max(0.0, (start - dt.datetime.now(dt.timezone.utc)).total_seconds() - 3))
    assert replicas(kubectl, ns)[0] == 1

    # Inside the window: the cron trigger's metric is the floor, and the HPA raises the Deployment to it.
    wait_for(lambda: replicas(kubectl, ns)[0] >= FLOOR, timeout=50, interval=1,
             what=f"{FLOOR} replicas inside the window")
    raised_after = (dt.datetime.now(dt.timezone.utc) - start).total_seconds()
    say(f"replicas {FLOOR} at start + {raised_after:.0f}s")
    items = keda.external_metric(ns, cron_metric, "ranker")
    assert items and items[0]["value"] == f"{FLOOR}", items
    wait_for(lambda: replicas(kubectl, ns)[1] >= FLOOR, timeout=30, what=f"{FLOOR} ready replicas (KWOK)")
    assert dt.datetime.now(dt.timezone.utc) < end
    assert replicas(kubectl, ns)[0] == FLOOR, "the Prometheus trigger (0) adds nothing above the cron floor"
    # KEDA's own poll (every pollingInterval, 10 s) marks the ScaledObject active too.
    wait_for(lambda: condition(kubectl.get("scaledobject", "ranker", ns), "Active").get("status") == "True",
             timeout=25, interval=1, what="the ScaledObject Active=True inside the window")

    # After the window: the cron metric drops to 0 and replicas fall back to the minimum.
    time.sleep(max(0.0, (end - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    assert replicas(kubectl, ns)[0] == FLOOR, "the floor holds until the window's end"
    wait_for(lambda: replicas(kubectl, ns)[0] == 1, timeout=75, interval=1, what="replicas back to 1 after the window")
    say(f"replicas 1 at end + {(dt.datetime.now(dt.timezone.utc) - end).total_seconds():.0f}s")
    assert raised_after < 45


def test_a_broken_trigger_degrades_the_model_deployment(kubectl, operator, ns, keda, prometheus):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kubectl.apply(md("ranker", ns, autoscaling=autoscaling(closed)))

    # KEDA's own conditions show the failure ...
    so = wait_for(lambda: (o := kubectl.get("scaledobject", "ranker", ns))
                  and condition(o, "Ready").get("status") == "False" and o, timeout=60, interval=1,
                  what="the ScaledObject Ready=False")
    ready = condition(so, "Ready")
    say(f"ScaledObject Ready=False ({ready.get('reason')}): {ready.get('message')}")
    # ... and the operator maps them into Degraded=True, AutoscalerFailing, in KEDA's words.
    mdep = wait_for(lambda: (o := kubectl.get("modeldeployment", "ranker", ns))
                    and condition(o, "Degraded").get("reason") == "AutoscalerFailing" and o, timeout=30,
                    what="Degraded=True (AutoscalerFailing)")
    degraded = condition(mdep, "Degraded")
    assert degraded["status"] == "True"
    assert ready["message"] in degraded["message"] and "ScaledObject ranker" in degraded["message"]
    say(f"Degraded: {degraded['message']}")

    # Fixed (the harness's Prometheus): KEDA's next poll succeeds, and Degraded clears.
    kubectl.apply(md("ranker", ns, autoscaling=autoscaling(prometheus.url)))
    wait_for(lambda: condition(kubectl.get("modeldeployment", "ranker", ns), "Degraded").get("status") == "False",
             timeout=60, interval=1, what="Degraded=False once the trigger works")
    assert condition(kubectl.get("scaledobject", "ranker", ns), "Ready").get("status") == "True"


# ---------------------------------------------------------------------------- the closed loop through KEDA
LOOP_CAPACITY_RPS = 50    # stated: 20 ms per request (GPU_MS), one instance, no batching
LOOP_UTILIZATION = 60     # each pod aimed at 30 requests/s: 100 requests/s needs ceil(100 / 30) = 4 replicas
# Served requests/s cannot exceed what the replicas serve, and the HPA moves only beyond its 10 % tolerance.
# One replica serves 50/s at best but only ~41/s on a loaded 2-core CI host (a CI run saw 41.8 against a
# 40/s target, inside the tolerance, and never scaled), so the target keeps headroom below the worst served
# rate: one replica at >= 41 -> 2, two at >= 82 -> 3 or 4. Each new series fills its 30 s rate window from
# 0 first, so up takes two steps.
LOOP_RATE, LOOP_SECONDS = 100, 90


def loop_state(kubectl, ns: str, prometheus: PrometheusProcess, query: str) -> int:
    """Deployment replicas, logged with what Prometheus and KEDA's HPA see (the trail a failure leaves)."""
    replicas = deployment_replicas(kubectl, ns)
    hpa = kubectl.get("hpa", "keda-hpa-ranker", ns) or {}
    seen = [(m.get("external") or {}).get("current") for m in (hpa.get("status") or {}).get("currentMetrics") or []]
    try:
        value = prometheus.query_value(query)
    except Exception as err:  # noqa: BLE001 - a trail, not a check
        value = err
    say(f"replicas {replicas}; Prometheus {value}; keda-hpa-ranker current {seen}, "
        f"desired {(hpa.get('status') or {}).get('desiredReplicas')}")
    return replicas


def test_the_closed_loop_scales_through_keda_on_request_rate(cluster, kubectl, operator, ns, keda, prometheus,
                                                             tmp_path):
    """load -> real tritonservers -> Prometheus -> KEDA's Prometheus scaler -> KEDA's metrics API server ->
    the HPA controller (keda-hpa-ranker) -> the Deployment -> KWOK pods -> more real tritonservers."""
    ensure_installed(log=lambda m: None)
    overrides = spec_overrides()
    overrides["autoscaling"] = {
        "engine": "keda", "metric": "requestRate", "minReplicas": 1, "maxReplicas": 4,
        "capacity": {"requestsPerSecond": LOOP_CAPACITY_RPS, "learn": False},
        "targetUtilization": LOOP_UTILIZATION, "predictive": {"enabled": False},
        # The trigger queries the Prometheus that scrapes the pods' tritonservers (PodServers' targets).
        "prometheusAddress": prometheus.url,
        "scaleDown": {"stabilizationWindowSeconds": 30, "maxPercent": 100, "maxPods": 4, "periodSeconds": 15}}
    body = md("ranker", ns, **overrides)
    repository = build_repository(tmp_path, body["spec"])
    kube, sampler_kube = Kube.from_kubeconfig(cluster.kubeconfig), Kube.from_kubeconfig(cluster.kubeconfig)
    samples: list[tuple[float, int, int]] = []
    result: dict = {}
    stop = threading.Event()
    try:
        with PodServers(kube, ns, "ranker", repository, tmp_path / "pods", prometheus.set_targets,
                        env={"PEAKSERVE_SIMULATED_GPU_MS": str(GPU_MS)}) as servers:
            kubectl.apply(body)
            so = wait_for(lambda: kubectl.get("scaledobject", "ranker", ns), timeout=30, what="the ScaledObject")
            trigger = next(t for t in so["spec"]["triggers"] if t["type"] == "prometheus")
            assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "30", trigger
            assert "nv_inference_request_success" in trigger["metadata"]["query"], trigger
            assert trigger["metadata"]["serverAddress"] == prometheus.url
            wait_for(lambda: servers.count() == 1, timeout=60, what="a tritonserver behind the first pod")
            wait_for(lambda: condition(kubectl.get("hpa", "keda-hpa-ranker", ns), "ScalingActive").get("status")
                     == "True", timeout=60, what="keda-hpa-ranker ScalingActive=True")
            assert kubectl.get("hpa", "ranker", ns) is None, "one autoscaler: KEDA's"

            sampler = threading.Thread(target=sample_replicas, args=(sampler_kube, ns, servers, stop, samples),
                                       daemon=True)
            load = threading.Thread(target=lambda: result.update(load=asyncio.run(run_load(
                servers.grpc_endpoints, "ranker", mode="rate", rate=LOOP_RATE, duration=LOOP_SECONDS,
                max_requests=LOOP_RATE * LOOP_SECONDS, warmup=0)).to_dict(series=False)), daemon=True)
            sampler.start()
            started = time.monotonic()
            load.start()

            # Up: the Deployment-wide request rate over 30 s, per replica, against 30 requests/s.
            query = trigger["metadata"]["query"]
            wait_for(lambda: loop_state(kubectl, ns, prometheus, query) >= 3, timeout=LOOP_SECONDS - 5, interval=2,
                     what="KEDA's HPA to scale up on the request rate")
            scaled_after = time.monotonic() - started
            say(f"replicas >= 3 after {scaled_after:.0f}s of load")
            wait_for(lambda: servers.count() >= 3, timeout=30, what="tritonservers behind the new pods")
            load.join(timeout=LOOP_SECONDS + 30)
            assert "load" in result, "the load did not finish in time"
            load_ended = time.monotonic()
            # Down: the rate decays to 0 over its 30 s window, then the 30 s stabilization window passes.
            wait_for(lambda: loop_state(kubectl, ns, prometheus, query) == 1, timeout=120, interval=3,
                     what="KEDA's HPA to scale down after the load")
            down_after = time.monotonic() - load_ended
            wait_for(lambda: servers.count() == 1, timeout=30, what="tritonservers stopped with their pods")
            stop.set()
            sampler.join(timeout=10)
    finally:
        stop.set()
        prometheus.set_targets([])  # the module's Prometheus scrapes nothing again for the other tests
    run = result["load"]
    peak = max((s[1] for s in samples), default=0)
    changes: list[list[float]] = []
    for t, n, _ in samples:
        if not changes or changes[-1][1] != n:
            changes.append([round(t - started, 1), n])
    say(f"KEDA closed loop: {LOOP_RATE} req/s for {LOOP_SECONDS} s; replicas >= 3 after {scaled_after:.0f}s, "
        f"peak {peak}, back to 1 {down_after:.0f}s after the load; {run['throughput_rps']:.0f} req/s, "
        f"p50 {run['latency_ms']['p50']:.0f} ms, p99 {run['latency_ms']['p99']:.0f} ms, completed "
        f"{run['completed']}, errors {run['errors']}, dropped {run.get('dropped', 0)}")
    say(f"replicas [s after the load started, n]: {changes}")
    assert run["completed"] > 0 and run["errors"] <= run["completed"] * 0.05, run
    assert 3 <= peak <= 4
