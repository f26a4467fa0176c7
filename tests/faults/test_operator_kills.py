"""Random-point kills: the operator is SIGKILLed at seeded random moments across creates, updates, builds,
autoscaling hand-overs (both ways) and canary steps, and started again each time. After every restart:

- every ModelDeployment converges (settled: rig.unsettled says what that means), within a bound;
- exactly one build Job per build hash, and one Job per name, over the whole run (a Job watch sees every uid);
- ready serving pods never fall below what they were before the step (or what the step asks for, when it
  asks for fewer): a pod watch sees every change, and the lowest count is recorded;
- no condition is stuck: each reaches its settled reason at the current observedGeneration;
- no Event storm: the operator's Events per object after the restart stay under a small bound.

Planted credentials (a referenced Secret, refused URIs) must not show in the operator log, Events or status.

The operator is this test's own process (namespaced to the test's namespace); the session's shared operator
is paused meanwhile, so nothing else reconciles these objects. Builds and canary analyses run on the host
(the local job runner, as `peakserve-dev builds` does); analyses query a stub Prometheus that has no data.
The seed is PEAKSERVE_FAULT_SEED (default below); the figures go to benchmarks/results/faults.json.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from peakserve.cluster.client import Kube
from peakserve_harness.pods.job_pods import run_job_pods

from integration.cluster import md, wait_for
from integration.test_builds import tiny, write_tiny_source

from .figures import record
from .rig import (JobLedger, KillableOperator, ReadyFloor, StubPrometheus, event_names, events_since,
                  shared_operators_paused, unsettled, wait_settled)
from .secrets import assert_no_leaks, plant

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

SEED = int(os.environ.get("PEAKSERVE_FAULT_SEED", "1207"))
DRIFT_INTERVAL = 10.0        # the drift loop must not be what makes a restart converge: longer than most waits
SETTLE_TIMEOUT = 60.0        # seconds from a restart until everything is settled (a build adds its run)
BUILD_SETTLE_TIMEOUT = 150.0
EVENTS_PER_OBJECT = 8        # Events one object may get after one restart; more is a storm
IMAGES = [f"nvcr.io/nvidia/tritonserver:{tag}-py3" for tag in ("24.09", "24.10", "24.11", "24.12")]  # none the default
H100 = "NVIDIA-H100-80GB-HBM3"


@dataclass
class Step:
    what: str
    kind: str                                   # create | update | build | handover | canary | resume
    change: Callable[[], None]
    wanted: dict[str, int]                      # ready pods each object asks for once the step is done
    kill_within: tuple[float, float] = (0.0, 1.5)   # seconds after the change (or after `moment`)
    moment: Callable[[], None] | None = None    # waits for the point the kill is aimed at
    settle_timeout: float = SETTLE_TIMEOUT


@dataclass
class Point:
    step: str
    kind: str
    kill_after: float
    restart_seconds: float = 0.0
    convergence_seconds: float = 0.0
    before: dict[str, int] = field(default_factory=dict)
    floor: dict[str, int] = field(default_factory=dict)
    lowest: dict[str, int] = field(default_factory=dict)
    in_flight: bool = False                     # the step was not settled yet when the kill landed
    events_after_restart: dict[str, list[str]] = field(default_factory=dict)


def _tiny_source(src: Path) -> Path:
    return write_tiny_source(src, "tiny_factory_faults")


@pytest.fixture
def no_shared_operator():
    with shared_operators_paused():
        yield


def test_random_point_kills(cluster, kubectl, ns, tmp_path, no_shared_operator):
    started = time.monotonic()
    rng = random.Random(SEED)
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    planted = plant(kubectl, ns, SEED)
    source, store = _tiny_source(tmp_path / "source"), tmp_path / "store"
    op = KillableOperator(cluster.kubeconfig, tmp_path / "operator.log", drift_interval=DRIFT_INTERVAL,
                          args=["-n", ns])
    stop_runner = threading.Event()
    runner = threading.Thread(target=run_job_pods, args=(kube, stop_runner), daemon=True,
                              kwargs={"poll": 0.5, "namespace": ns})

    with StubPrometheus() as prometheus, ReadyFloor(kubectl, ns) as ready, JobLedger(kubectl, ns) as jobs:
        def alpha(**extra) -> dict:
            return md("alpha", ns, model=planted.model_source(), **extra)

        canary = {"steps": [{"weight": 25, "pauseSeconds": 0}, {"weight": 50, "pauseSeconds": 1}],
                  "analysis": {"prometheusAddress": prometheus.url, "windowSeconds": 30,
                               "probe": {"enabled": False}}}

        def beta(image: str, **extra) -> dict:
            return md("beta", ns, replicas=2, serving={"gpuProduct": H100, "image": image, "rollout": canary},
                      **extra)

        def delta(image: str = IMAGES[0], **extra) -> dict:
            return md("delta", ns, serving={"gpuProduct": H100, "image": image}, **extra)

        def gamma(batch_sizes: list[int], replicas: int = 1) -> dict:
            obj = tiny("gamma", ns, source, store, batchSizes=batch_sizes)
            obj["spec"]["replicas"] = replicas
            return obj

        def autoscaled(low: int, high: int) -> dict:
            return {"minReplicas": low, "maxReplicas": high, "prometheusAddress": prometheus.url}

        def build_running() -> None:
            wait_for(lambda: any(p["status"].get("phase") == "Running" for p in kube.list(
                "v1", "Pod", ns, "app.kubernetes.io/component=model-build")), timeout=60, what="a running build pod")

        def canary_at(step: int) -> Callable[[], None]:
            def moment() -> None:
                wait_for(lambda: ((kube.get("peakserve.io/v1alpha1", "ModelDeployment", ns, "beta") or {})
                                  .get("status", {}).get("rollout") or {}).get("step", -1) >= step,
                         timeout=60, what=f"beta's canary at step {step}")
            return moment

        def exists(kind: str, name: str) -> Callable[[], None]:
            api_version = {"Deployment": "apps/v1", "HorizontalPodAutoscaler": "autoscaling/v2"}[kind]
            return lambda: wait_for(lambda: kube.get(api_version, kind, ns, name), timeout=30, interval=0.05,
                                    what=f"{kind} {name}")

        apply = kubectl.apply
        # Kill windows are short where the operator's part of a step is short (a create or a hand-over is one
        # pass of a few hundred ms), and aimed by a `moment` where it is long: a canary Deployment created, a
        # canary step reached, a build pod running.
        quick, canary_made = (0.0, 0.5), (0.0, 0.8)
        steps = [
            Step("create alpha (model from S3 with the planted Secret)", "create", lambda: apply(alpha(replicas=2)),
                 {"alpha": 2}, quick),
            Step("create beta (canary steps)", "create", lambda: apply(beta(IMAGES[0])), {"beta": 2}, quick),
            Step("create gamma (a build)", "build", lambda: apply(gamma([1, 32])), {"gamma": 1}, (0.0, 0.3),
                 settle_timeout=BUILD_SETTLE_TIMEOUT),
            Step("alpha new image (surge canary)", "update",
                 lambda: apply(alpha(replicas=2, serving={"image": IMAGES[1]})), {"alpha": 2}, canary_made,
                 moment=exists("Deployment", "alpha-canary")),
            Step("beta new image (canary steps)", "canary", lambda: apply(beta(IMAGES[1])), {"beta": 2}, canary_made,
                 moment=exists("Deployment", "beta-canary")),
            Step("beta new image, killed inside step 0", "canary", lambda: apply(beta(IMAGES[2])), {"beta": 2},
                 (0.0, 1.0), moment=canary_at(0)),
            Step("gamma new build, killed while it builds", "build", lambda: apply(gamma([1, 16])), {"gamma": 1},
                 (0.0, 4.0), moment=build_running, settle_timeout=BUILD_SETTLE_TIMEOUT),
            Step("alpha hands replicas to the HPA", "handover",
                 lambda: apply(alpha(replicas=2, serving={"image": IMAGES[1]}, autoscaling=autoscaled(2, 4))),
                 {"alpha": 2}, quick),
            Step("create delta", "create", lambda: apply(delta()), {"delta": 1}, quick),
            Step("alpha HPA floor 2 -> 3", "handover",
                 lambda: apply(alpha(replicas=2, serving={"image": IMAGES[1]}, autoscaling=autoscaled(3, 4))),
                 {"alpha": 3}, quick),
            Step("delta new image (surge canary)", "update", lambda: apply(delta(IMAGES[1])), {"delta": 1},
                 canary_made, moment=exists("Deployment", "delta-canary")),
            Step("alpha takes replicas back from the HPA (3)", "handover",
                 lambda: apply(alpha(replicas=3, serving={"image": IMAGES[1]})), {"alpha": 3}, quick),
            Step("beta new image, killed inside step 1", "canary", lambda: apply(beta(IMAGES[3])), {"beta": 2},
                 (0.0, 1.0), moment=canary_at(1)),
            Step("gamma 1 -> 2 replicas", "update", lambda: apply(gamma([1, 16], replicas=2)), {"gamma": 2}, quick),
            Step("beta hands replicas to the HPA", "handover",
                 lambda: apply(beta(IMAGES[3], autoscaling=autoscaled(2, 4))), {"beta": 2}, quick),
            Step("beta new image while autoscaled (canary steps)", "canary",
                 lambda: apply(beta(IMAGES[0], autoscaling=autoscaled(2, 4))), {"beta": 2}, canary_made,
                 moment=exists("Deployment", "beta-canary")),
            Step("gamma back to the first build (reused, no new Job)", "build",
                 lambda: apply(gamma([1, 32], replicas=2)), {"gamma": 2}, quick),
            Step("delta 1 -> 2 replicas", "update", lambda: apply(delta(IMAGES[1], replicas=2)), {"delta": 2}, quick),
            Step("alpha new image at 3 replicas (surge canary)", "update",
                 lambda: apply(alpha(replicas=3, serving={"image": IMAGES[2]})), {"alpha": 3}, canary_made,
                 moment=exists("Deployment", "alpha-canary")),
            Step("gamma third build, killed while it builds", "build", lambda: apply(gamma([1, 8], replicas=2)),
                 {"gamma": 2}, (0.5, 5.0), moment=build_running, settle_timeout=BUILD_SETTLE_TIMEOUT),
            Step("delta hands replicas to the HPA", "handover",
                 lambda: apply(delta(IMAGES[1], autoscaling=autoscaled(2, 3))), {"delta": 2}, quick),
            Step("no change: a kill while everything is settled (resume only)", "resume", lambda: None, {},
                 (0.0, 1.0)),
            Step("beta takes replicas back from the HPA (2)", "handover", lambda: apply(beta(IMAGES[0])),
                 {"beta": 2}, quick),
        ]

        points: list[Point] = []
        failures: list[str] = []
        try:
            op.start()
            runner.start()
            for step in steps:
                before = {name: ready.ready(name) for name in ("alpha", "beta", "gamma", "delta")}
                floor = {name: min(before[name], step.wanted.get(name, before[name])) for name in before}
                ready.arm(floor)
                step.change()
                if step.moment:
                    step.moment()
                point = Point(step.what, step.kind, round(rng.uniform(*step.kill_within), 2), before=before,
                              floor=floor)
                time.sleep(point.kill_after)
                pid = op.pid()
                op.kill()
                seen_before_restart = event_names(kube, ns)
                point.in_flight = bool(unsettled(kube, ns))
                time.sleep(rng.uniform(0.0, 0.5))    # down for a moment, as a crash-looping pod would be
                restarted = time.monotonic()
                op.start()
                assert op.pid() != pid
                point.restart_seconds = round(time.monotonic() - restarted, 2)
                wait_settled(kube, ns, step.settle_timeout, f"after: {step.what}")
                point.convergence_seconds = round(time.monotonic() - restarted, 2)
                time.sleep(1.0)  # Events of the settling pass land
                point.events_after_restart = events_since(kube, ns, seen_before_restart)
                point.lowest = ready.lowest()
                points.append(point)
                print(f"[kill {len(points):2d}] {step.what}: killed {point.kill_after}s in, settled "
                      f"{point.convergence_seconds}s after restart, lowest {point.lowest} (floor {floor}), "
                      f"in flight {point.in_flight}, events {point.events_after_restart}")
                for name, low in point.lowest.items():
                    if low < floor[name]:
                        failures.append(f"{step.what}: {name} fell to {low} ready (floor {floor[name]})")
                storm = {k: r for k, r in point.events_after_restart.items()
                         if len(r) > EVENTS_PER_OBJECT or max(Counter(r).values()) > 2}
                if storm:
                    failures.append(f"{step.what}: Event storm after the restart: {storm}")
                if jobs.duplicates():
                    failures.append(f"{step.what}: duplicate Jobs {jobs.duplicates()}")
        finally:
            stop_runner.set()
            op.stop()

        leaks = assert_no_leaks(planted, kubectl, logs=[op.log_path])
        build_jobs = jobs.build_jobs()
        worst_margin = min(p.lowest.get(n, 0) - p.floor[n] for p in points for n in p.floor)
        record("operator_kills", {
            "seed": SEED, "runs": len(points), "kinds": sorted({p.kind for p in points}),
            "checked": ["every ModelDeployment settled after each restart (status and conditions at the current "
                        "generation; Ready Serving, Progressing RolloutComplete, Degraded AsExpected or "
                        "AutoscalerFailing when autoscaled, BuildSucceeded True; no canary; Deployment rolled out)",
                        "one Job per name and one build Job per build hash over the run (Job watch)",
                        "ready serving pods never below min(before, wanted) (pod watch)",
                        f"operator Events per object after each restart <= {EVENTS_PER_OBJECT}, none repeated "
                        "more than twice",
                        "planted credentials absent from the operator log, all Events, all statuses"],
            "worstConvergenceSeconds": max(p.convergence_seconds for p in points),
            "worstConvergenceSecondsWithoutBuild": max(p.convergence_seconds for p in points if p.kind != "build"),
            "worstRestartSeconds": max(p.restart_seconds for p in points),
            "readyDipsBelowFloor": len(ready.dips),
            "worstReadyMarginOverFloor": worst_margin,
            "lowestReadyVsBefore": {p.step: {n: [p.before[n], p.lowest.get(n, 0)] for n in p.floor
                                             if p.floor[n] > 0} for p in points},
            "buildJobsPerHash": build_jobs, "duplicateJobs": len(jobs.duplicates()), "jobsSeen": jobs.count(),
            "maxEventsPerObjectAfterRestart": max((len(r) for p in points for r in p.events_after_restart.values()),
                                                  default=0),
            "eventsAfterRestart": {p.step: p.events_after_restart for p in points if p.events_after_restart},
            "killsWhileTheStepWasInFlight": sum(p.in_flight for p in points),
            "secretsScan": leaks,
            "killAfterSeconds": [p.kill_after for p in points],
            "wallSeconds": round(time.monotonic() - started, 1),
        })
        assert not failures, "\n".join(failures)
        assert len(points) >= 20
        assert build_jobs and all(n == 1 for n in build_jobs.values()), build_jobs
        assert not unsettled(kube, ns)
