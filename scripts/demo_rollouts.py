"""make demo, part 2: two canaries on real tritonservers, one promoted and one rolled back by the probe comparison.

Runs against the demo's control plane, operator and job runner (which runs the analysis Jobs). For the
length of the demo it runs the pod agent of the probed nodes (a real tritonserver per Triton pod, readiness
from /v2/health/ready) and a Prometheus that scrapes every pod, sends bounded open-loop load over the Ready
pods of both tracks, and prints each analysis's figures and the lowest Ready count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from peakserve.cluster.client import Kube
from peakserve_harness.controlplane.cluster import DevCluster, default_dir
from peakserve_harness.controlplane.nodes import PROBED_LABEL, PROBED_VALUE
from peakserve_harness.metrics.prometheus import PrometheusProcess
from peakserve_harness.pods.probed_pods import ProbedPods
from peakserve_harness.rollout_load import RolloutLoad
from peakserve_harness.rollout_models import make_models
from peakserve_harness.triton.install import ensure_installed

NAME, NAMESPACE = "shop-ranker", "default"
STEPS = [{"weight": 30, "pauseSeconds": 10}, {"weight": 50, "pauseSeconds": 10}]  # 1, then 2 canary pods beside 2


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def apply(uri: str, prometheus: str, probe: Path) -> None:
    body = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"model": {"name": "ranker", "uri": uri, "maxBatchSize": 64,
                               "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
                               "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
                     "replicas": 2,
                     "serving": {"gpus": 1, "gpuProduct": "NVIDIA-A10", "startupTimeoutSeconds": 60,
                                 "nodeSelector": {PROBED_LABEL: PROBED_VALUE},
                                 "tolerations": [{"key": PROBED_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                                 "dynamicBatching": {"enabled": False},
                                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                                 "rollout": {"steps": STEPS, "analysis": {
                                     "prometheusAddress": prometheus, "windowSeconds": 30,
                                     "probe": {"dataUri": str(probe), "rows": 512}}}}}}
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))


def rollout() -> dict:
    obj = json.loads(kubectl("get", "modeldeployment", NAME, "-n", NAMESPACE, "-o", "json"))
    return (obj.get("status") or {}).get("rollout") or {}


def wait(check, what: str, timeout: float = 240) -> None:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if check():
            return
        message = rollout().get("message")
        if message and message != last:
            print(f"  {message}", flush=True)
            last = message
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def show(load: RolloutLoad, took: float) -> None:
    status = rollout()
    for analysis in status.get("analyses") or []:
        figures = ", ".join(f"{k} {v}" for k, v in sorted(analysis.get("figures", {}).items()))
        print(f"  step {analysis['step'] + 1}: {'passed' if analysis['passed'] else 'FAILED'} "
              f"({analysis.get('reason')}): {figures}")
    print(f"  {took:.0f}s from the update; lowest Ready pods {load.lowest_ready}; "
          f"requests {load.completed}, failed {load.failed}")


def update(uri: str, prometheus: str, probe: Path, load: RolloutLoad, done, what: str) -> None:
    started = time.monotonic()
    apply(uri, prometheus, probe)
    wait(done, what)
    show(load, time.monotonic() - started)


def main() -> int:
    cluster = DevCluster(default_dir(), log=lambda m: None)
    ensure_installed(log=lambda m: None)
    models = make_models(cluster.dir / "rollout-models" / str(int(time.time())))
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    with PrometheusProcess(cluster.dir / "rollout-prometheus") as prometheus, \
            ProbedPods(kube, cluster.dir / "rollout-pods", namespace=NAMESPACE,
                       on_targets=prometheus.set_targets) as pods:
        print(f"Serving v1 on the probed nodes (Prometheus {prometheus.url}); canary steps {STEPS}", flush=True)
        apply(str(models["good"]), prometheus.url, models["probe"])
        load = RolloutLoad(pods, NAMESPACE, "ranker")
        wait(lambda: load.ready() == 2, "two Ready stable pods", timeout=120)
        with load:
            print("\n-- update 1: the same ranker from another artifact (a new pod template) --", flush=True)
            update(str(models["good_copy"]), prometheus.url, models["probe"], load,
                   lambda: rollout().get("phase") == "Stable" and len(rollout().get("analyses") or []) == 2,
                   "the canary to be promoted")
            print("\n-- update 2: a ranker fed its features in another order (plausible scores, wrong order) --",
                  flush=True)
            update(str(models["shuffled"]), prometheus.url, models["probe"], load,
                   lambda: rollout().get("phase") == "RolledBack", "the probe comparison to roll it back")
        print(kubectl("get", "modeldeployment", NAME, "-n", NAMESPACE, "-o",
                      "jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{\"\\n\"}{end}"))
        print(kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", "--field-selector",
                      f"involvedObject.kind=ModelDeployment,involvedObject.name={NAME}"))
        kubectl("delete", "modeldeployment", NAME, "-n", NAMESPACE, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
