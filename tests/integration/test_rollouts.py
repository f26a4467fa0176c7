"""Safe rollouts on real components: the real control plane, a real tritonserver behind every Triton pod
(ProbedPods: the pod turns Ready only when its server answers /v2/health/ready, like a kubelet's probe),
real Prometheus scraping every pod, the analysis Job's real `peakserve analyze` (run on the host by the
local job runner) and real open-loop load from `peakserve bench`'s library, spread over the Ready pods of
both tracks the way a Service splits traffic.

Each scenario records, from the same run: ready replicas at their lowest, failed requests, and the time
from the canary's start to its promotion or rollback. With PEAKSERVE_ROLLOUT_FIGURES=FILE they are written
there as JSON (`make bench-rollouts` does that and BENCHMARKS.md quotes it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from peakserve.cluster.client import Kube
from peakserve_harness.controlplane.gateway_api import install_gateway_api, uninstall_gateway_api
from peakserve_harness.controlplane.nodes import PROBED_LABEL, PROBED_VALUE
from peakserve_harness.metrics.prometheus import PrometheusProcess
from peakserve_harness.pods.job_pods import ANALYSIS, run_job_pods
from peakserve_harness.pods.probed_pods import ProbedPods
from peakserve_harness.rollout_load import RolloutLoad
from peakserve_harness.triton.install import ensure_installed

from .cluster import condition, md, wait_for
from peakserve_harness.rollout_models import make_models

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RATE = 20             # requests/s over all Ready pods: light, but every check has traffic to judge
STABLE_REPLICAS = 2
MODEL = {"name": "ranker", "maxBatchSize": 64,
         "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
         "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]}
PROBED = {"nodeSelector": {PROBED_LABEL: PROBED_VALUE},
          "tolerations": [{"key": PROBED_LABEL, "operator": "Exists", "effect": "NoSchedule"}]}


# ---- the rig: real servers behind the pods, Prometheus, the job runner ------------------------------------

class Rig:
    def __init__(self, kube: Kube, prometheus: PrometheusProcess, pods: ProbedPods, models: dict[str, Path]):
        self.kube, self.prometheus, self.pods, self.models = kube, prometheus, pods, models


@pytest.fixture(scope="module")
def rig(cluster, kubectl, tmp_path_factory):
    ensure_installed(log=lambda m: None)
    root = tmp_path_factory.mktemp("rollouts")
    models = make_models(root / "models")
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    stop = threading.Event()
    runner = threading.Thread(target=run_job_pods, args=(kube, stop), kwargs={"kinds": (ANALYSIS,)},
                              name="analysis-runner", daemon=True)
    with PrometheusProcess(root / "prometheus") as prometheus, \
            ProbedPods(kube, root / "pods", on_targets=prometheus.set_targets) as pods:
        runner.start()
        yield Rig(kube, prometheus, pods, models)
        stop.set()
        runner.join(timeout=30)


def ranker(ns: str, rig: Rig, uri: str, rollout: dict | None = None, **extra) -> dict:
    serving = {**PROBED, "gpus": 1, "gpuProduct": "NVIDIA-A10", "dynamicBatching": {"enabled": False},
               "instanceGroups": [{"kind": "GPU", "count": 1}], "startupTimeoutSeconds": 60,
               "rollout": rollout or {}}
    return md("ranker", ns, model={**MODEL, "uri": uri}, serving=serving, replicas=STABLE_REPLICAS, **extra)


def analysis(rig: Rig, **overrides) -> dict:
    probe = {"dataUri": str(rig.models["probe"]), "rows": 512, **overrides.pop("probe", {})}
    return {"prometheusAddress": rig.prometheus.url, "windowSeconds": 30, "minRequests": 20, "probe": probe,
            **overrides}


# ---- what each scenario measures ------------------------------------------------------------------------

class Watch(RolloutLoad):
    """The load and the lowest Ready count of one scenario, from two Ready stable pods on."""

    def __init__(self, rig: Rig, ns: str):
        super().__init__(rig.pods, ns, "ranker", rate=RATE)

    def __enter__(self) -> "Watch":
        wait_for(lambda: self.ready() == STABLE_REPLICAS, timeout=90, what="the stable pods Ready behind real servers")
        return self.start()


FIGURES: dict[str, dict] = {}


def record(name: str, **figures) -> None:
    FIGURES[name] = figures
    print(f"[rollout figures] {name}: {figures}")
    target = os.environ.get("PEAKSERVE_ROLLOUT_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def rollout_status(kubectl, ns: str) -> dict:
    return (kubectl.get("modeldeployment", "ranker", ns).get("status") or {}).get("rollout") or {}


def serve_stable(kubectl, ns: str, rig: Rig, rollout: dict) -> None:
    kubectl.apply(ranker(ns, rig, str(rig.models["good"]), rollout))
    wait_for(lambda: len(rig.pods.http_endpoints(ns)) == STABLE_REPLICAS, timeout=120,
             what="two stable pods Ready behind real tritonservers")


def update_to(kubectl, ns: str, rig: Rig, model: str, rollout: dict) -> float:
    kubectl.apply(ranker(ns, rig, str(rig.models[model]), rollout))
    return time.monotonic()


def canary_gone(kubectl, ns: str) -> bool:
    return kubectl.get("deployment", "ranker-canary", ns) is None


# ---- the scenarios ----------------------------------------------------------------------------------------

@pytest.mark.real_pods
def test_good_canary_promotes_through_every_step_without_a_failed_request(kubectl, operator, ns, rig):
    steps = {"steps": [{"weight": 30, "pauseSeconds": 15}, {"weight": 50, "pauseSeconds": 15}],
             "analysis": analysis(rig)}
    serve_stable(kubectl, ns, rig, steps)
    with Watch(rig, ns) as watch:
        started = update_to(kubectl, ns, rig, "good_copy", steps)
        wait_for(lambda: rollout_status(kubectl, ns).get("phase") == "Stable"
                 and len(rollout_status(kubectl, ns).get("analyses") or []) == 2 and canary_gone(kubectl, ns),
                 timeout=360, interval=1, what="the canary to pass both steps and be promoted")
        took = time.monotonic() - started
        wait_for(lambda: watch.ready() == STABLE_REPLICAS, timeout=60, what="the promoted stable pods Ready")
        time.sleep(2)
    status = rollout_status(kubectl, ns)
    assert [a["passed"] for a in status["analyses"]] == [True, True], status["analyses"]
    figures = status["analyses"][-1]["figures"]
    assert figures["topKAgreement"] == 1.0 and figures["psi"] < 0.01
    dep = kubectl.get("deployment", "ranker", ns)
    assert dep["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"] == str(rig.models["good_copy"])
    assert watch.completed > 0 and watch.failed == 0, (watch.completed, watch.failed, watch.failures)
    assert watch.lowest_ready >= STABLE_REPLICAS
    record("good canary: 2 steps, promoted", seconds_to_promotion=round(took, 1), lowest_ready=watch.lowest_ready,
           failed_requests=watch.failed, requests=watch.completed)


@pytest.mark.real_pods
def test_canary_that_scores_wrongly_is_rolled_back_by_the_probe_comparison(kubectl, operator, ns, rig):
    steps = {"steps": [{"weight": 30, "pauseSeconds": 15}], "analysis": analysis(rig)}
    serve_stable(kubectl, ns, rig, steps)
    with Watch(rig, ns) as watch:
        started = update_to(kubectl, ns, rig, "shuffled", steps)
        wait_for(lambda: rollout_status(kubectl, ns).get("phase") == "RolledBack", timeout=240, interval=1,
                 what="the probe comparison to roll the canary back")
        took = time.monotonic() - started
        wait_for(lambda: canary_gone(kubectl, ns), timeout=30, what="the canary removed")
    obj = kubectl.get("modeldeployment", "ranker", ns)
    degraded = condition(obj, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolledBack"
    verdict = obj["status"]["rollout"]["analyses"][-1]
    assert verdict["reason"] in ("ScoreDrift", "TopKAgreement", "AucDrop"), verdict
    assert "probe rows" in degraded["message"], degraded["message"]
    # error rate and latency looked fine: only the model's own scores gave it away
    assert verdict["figures"]["canaryErrorRate"] == 0.0
    assert verdict["figures"]["canaryRequests"] >= 20
    assert watch.failed == 0 and watch.lowest_ready >= STABLE_REPLICAS
    # the verdict holds: the same spec is not retried
    time.sleep(8)
    assert canary_gone(kubectl, ns) and rollout_status(kubectl, ns)["phase"] == "RolledBack"
    record("wrongly scoring canary: rolled back by the probe comparison", seconds_to_rollback=round(took, 1),
           lowest_ready=watch.lowest_ready, failed_requests=watch.failed, requests=watch.completed,
           verdict=verdict["message"], top_k_agreement=verdict["figures"].get("topKAgreement"),
           psi=verdict["figures"].get("psi"))


@pytest.mark.real_pods
def test_canary_that_fails_requests_is_rolled_back_on_error_rate(kubectl, operator, ns, rig):
    steps = {"steps": [{"weight": 30, "pauseSeconds": 15}], "analysis": analysis(rig, probe={"enabled": False})}
    serve_stable(kubectl, ns, rig, steps)
    with Watch(rig, ns) as watch:
        started = update_to(kubectl, ns, rig, "failing", steps)
        wait_for(lambda: rollout_status(kubectl, ns).get("phase") == "RolledBack", timeout=240, interval=1,
                 what="the error rate to roll the canary back")
        took = time.monotonic() - started
    verdict = rollout_status(kubectl, ns)["analyses"][-1]
    assert verdict["reason"] == "ErrorRate" and verdict["figures"]["canaryErrorRate"] > 0.5, verdict
    assert verdict["figures"]["stableErrorRate"] == 0.0
    assert watch.lowest_ready >= STABLE_REPLICAS
    # the failures are the canary's share of the traffic until its rollback, and none after it
    record("failing canary: rolled back on error rate", seconds_to_rollback=round(took, 1),
           lowest_ready=watch.lowest_ready, failed_requests=watch.failed, requests=watch.completed,
           canary_error_rate=verdict["figures"]["canaryErrorRate"])


@pytest.mark.real_pods
def test_missing_claim_and_a_model_that_never_loads_keep_every_ready_replica(kubectl, operator, ns, rig):
    surge = {"progressDeadlineSeconds": 30}
    serve_stable(kubectl, ns, rig, surge)
    with Watch(rig, ns) as watch:
        spec = ranker(ns, rig, "pvc://no-such-claim/ranker/1", surge)
        kubectl.apply(spec)
        wait_for(lambda: rollout_status(kubectl, ns).get("reason") == "ClaimNotFound", timeout=60,
                 what="the rollout held on the missing claim")
        obj = kubectl.get("modeldeployment", "ranker", ns)
        assert condition(obj, "Progressing")["reason"] == "ClaimNotFound"
        assert condition(obj, "Ready")["status"] == "True"
        assert canary_gone(kubectl, ns)
        held_ready = watch.ready()

        started = update_to(kubectl, ns, rig, "broken", surge)
        wait_for(lambda: kubectl.get("deployment", "ranker-canary", ns) is not None, timeout=30,
                 what="the canary of the broken model")
        wait_for(lambda: rollout_status(kubectl, ns).get("phase") == "RolledBack", timeout=120, interval=1,
                 what="the canary that never turns Ready to be rolled back at its deadline")
        took = time.monotonic() - started
        wait_for(lambda: canary_gone(kubectl, ns), timeout=30, what="the canary removed")
    obj = kubectl.get("modeldeployment", "ranker", ns)
    assert condition(obj, "Degraded")["reason"] == "RolledBack"
    assert "progress deadline" in condition(obj, "Degraded")["message"]
    assert obj["status"]["rollout"]["reason"] == "CanaryNotReady"
    assert held_ready == STABLE_REPLICAS and watch.lowest_ready >= STABLE_REPLICAS and watch.failed == 0
    record("missing claim: held", lowest_ready=held_ready, failed_requests=0)
    record("model that never loads: rolled back at the 30 s deadline", seconds_to_rollback=round(took, 1),
           lowest_ready=watch.lowest_ready, failed_requests=watch.failed, requests=watch.completed)


def test_rollout_inside_a_promotion_window_is_held_but_scaling_is_not(kubectl, operator, ns):
    # KWOK's ordinary nodes are enough here: nothing new is started.
    window = {"schedules": [{"name": "flash-sale", "start": "2026-01-01T00:00:00", "end": "2099-01-01T00:00:00",
                             "timezone": "UTC", "minReplicas": 3}], "minReplicas": 1, "maxReplicas": 6}
    kubectl.apply(md("ranker", ns, autoscaling=window))
    wait_for(lambda: (kubectl.get("hpa", "ranker", ns) or {}).get("spec", {}).get("minReplicas") == 3,
             timeout=60, what="the schedule's floor of 3")
    image = "nvcr.io/nvidia/tritonserver:25.11-py3"
    kubectl.apply(md("ranker", ns, autoscaling={**window, "maxReplicas": 8}, serving={"image": image}))
    wait_for(lambda: rollout_status(kubectl, ns).get("reason") == "ChangeFreeze", timeout=60,
             what="the rollout held by the change freeze")
    wait_for(lambda: kubectl.get("hpa", "ranker", ns)["spec"]["maxReplicas"] == 8, timeout=30,
             what="the scaling change applied during the freeze")
    assert canary_gone(kubectl, ns)
    assert not kubectl.get("deployment", "ranker", ns)["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert condition(kubectl.get("modeldeployment", "ranker", ns), "Progressing")["reason"] == "ChangeFreeze"
    # force overrides the freeze: the canary starts
    kubectl.apply(md("ranker", ns, autoscaling={**window, "maxReplicas": 8},
                     serving={"image": image, "rollout": {"force": True}}))
    wait_for(lambda: not canary_gone(kubectl, ns) or
             kubectl.get("deployment", "ranker", ns)["spec"]["template"]["spec"]["containers"][0]["image"] == image,
             timeout=60, what="the forced rollout to start")


def test_http_route_gets_the_exact_weight_where_the_gateway_api_is_served(cluster, kubectl, operator, ns):
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    install_gateway_api(kube, log=lambda m: None)
    try:
        _route_follows_the_step(kubectl, ns)
    finally:  # the rest of the session runs without the Gateway API, as most clusters do
        uninstall_gateway_api(kube, timeout=180)


def _route_follows_the_step(kubectl, ns: str) -> None:
    steps = {"steps": [{"weight": 10, "pauseSeconds": 3600}], "routeParents": [{"name": "shop-gateway"}]}
    kubectl.apply(md("ranker", ns, replicas=4, serving={"rollout": steps}))
    wait_for(lambda: condition(kubectl.get("modeldeployment", "ranker", ns), "Ready").get("status") == "True",
             timeout=60, what="ranker Ready")
    kubectl.apply(md("ranker", ns, replicas=4,
                     serving={"rollout": steps, "image": "nvcr.io/nvidia/tritonserver:25.11-py3"}))

    def weights():
        route = kubectl.get("httproute", "ranker", ns) or {}
        refs = ((route.get("spec") or {}).get("rules") or [{}])[0].get("backendRefs") or []
        return {r["name"]: r.get("weight") for r in refs}
    # one canary pod beside four stable ones: the Service splits 20/80 by pods; the route carries 10/90 exactly
    wait_for(lambda: weights() == {"ranker-stable": 90, "ranker-canary": 10}, timeout=90,
             what="the HTTPRoute's weights for the canary step")
    route = kubectl.get("httproute", "ranker", ns)
    assert route["spec"]["parentRefs"][0]["name"] == "shop-gateway"
    assert kubectl.get("service", "ranker-canary", ns)["spec"]["selector"]["peakserve.io/track"] == "canary"


def test_without_a_free_gpu_one_stable_pod_at_a_time_makes_room(kubectl, operator, ns):
    # The one H100 node's 8 GPUs all serve (4 pods x 2): the canary cannot surge, so one stable pod makes room
    # for it, and after it is Ready the stable pods are replaced one at a time. KWOK's nodes suffice here.
    h100 = {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpus": 2, "instanceGroups": [{"kind": "GPU", "count": 1}]}
    kubectl.apply(md("ranker", ns, replicas=4, serving=h100))
    wait_for(lambda: (kubectl.get("deployment", "ranker", ns) or {}).get("status", {}).get("readyReplicas") == 4,
             timeout=60, what="four stable pods on the H100 node")
    image = "nvcr.io/nvidia/tritonserver:25.11-py3"
    lowest = [4]

    def ready_pods() -> int:
        pods = kubectl.list("pods", ns, "peakserve.io/model-deployment=ranker")
        ready = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])))
        lowest[0] = min(lowest[0], ready)
        return ready

    # KWOK pods are Ready at once: the made-room phase may last less than one poll, so every version of the
    # ModelDeployment is watched rather than sampled.
    with kubectl.watch("modeldeployment", "ranker", ns) as seen:
        kubectl.apply(md("ranker", ns, replicas=4, serving={**h100, "image": image}))
        wait_for(lambda: ready_pods() >= 0 and any(((v.get("status") or {}).get("rollout") or {}).get("madeRoom") == 1
                                                   for v in seen()), timeout=60, interval=0.2,
                 what="one stable pod making room for the canary")

    def promoted() -> bool:
        ready_pods()
        dep = kubectl.get("deployment", "ranker", ns)
        return (dep["spec"]["template"]["spec"]["containers"][0]["image"] == image and canary_gone(kubectl, ns)
                and dep["status"].get("updatedReplicas") == 4 and dep["status"].get("readyReplicas") == 4)
    wait_for(promoted, timeout=120, interval=0.2, what="the stable side on the new image, all four pods Ready")
    # The pass that deletes the canary reports Promoting; the next one (on the deletion) reports Stable.
    wait_for(lambda: ready_pods() >= 0 and rollout_status(kubectl, ns).get("phase") == "Stable", timeout=30,
             interval=0.2, what="the rollout reported Stable")
    assert lowest[0] >= 3, f"ready pods fell to {lowest[0]}: more than one at a time"
