"""What the operator-kill and control-plane fault tests measure with, all bounded and thread-safe:

- `shared_operators_paused`: the session's shared operator stopped while a test runs its own;
- `KillableOperator`: an OperatorProcess of the test's own that can be SIGKILLed (the shared one is left alone);
- `KubectlWatch`: `kubectl get --watch` in a thread, restarted (with a fresh listing) when the API server goes;
- `ReadyFloor`: ready serving pods per ModelDeployment from a pod watch (every change seen, not polled),
  with the lowest count since the last `arm` and every dip below the floor armed for it;
- `JobLedger`: every Job uid ever seen per Job name, from a Job watch: a build Job deleted and created again,
  or two Jobs for one build hash, are duplicates;
- `unsettled` / `wait_settled`: which ModelDeployments are not yet in their settled state, and why;
  `diagnose`: what a failed wait prints (rollout status, conditions, Jobs, pods, the operator log);
- `peakserve_events`, `event_names`, `events_since`: the Events the operator posted in a namespace;
- `StubPrometheus`: answers every query with an empty vector, so a canary step's analysis runs and passes
  ("no canary requests": metric checks skipped) without a real Prometheus.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable

from peakserve.cluster.client import Kube
from peakserve_harness.loopback import free_port
from peakserve_harness.operator_process import OperatorProcess

MD_LABEL = "peakserve.io/model-deployment"
TRACK_LABEL = "peakserve.io/track"
BUILD_HASH_LABEL = "peakserve.io/build-hash"
COMPONENT_LABEL = "app.kubernetes.io/component"
JOB_COMPONENTS = {"model-build", "rollout-analysis"}
MD_API = "peakserve.io/v1alpha1"
VERBOSE_EVENTS = bool(os.environ.get("PEAKSERVE_FAULT_VERBOSE"))


# The session's clusterwide operator would reconcile a fault test's objects beside the test's own operator,
# and on while that one is killed: stopped for the test, started after.
from integration.chart import admin_operators_paused as shared_operators_paused  # noqa: E402


class KillableOperator(OperatorProcess):
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, whatever the operator was doing stays half done."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


# ---- watches -----------------------------------------------------------------------------------------

class KubectlWatch:
    """`kubectl get KIND -n NS --watch` in a thread, restarted whenever it ends (an API server restart ends
    it); each (re)start is followed by a full listing, so state missed while disconnected is replaced."""

    def __init__(self, kubectl, kind: str, namespace: str, on_event: Callable[[str, dict], None],
                 on_listing: Callable[[list[dict]], None]):
        self.kubectl, self.kind, self.namespace = kubectl, kind, namespace
        self.on_event, self.on_listing = on_event, on_listing
        self.stop_event = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def start(self) -> "KubectlWatch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self.thread.join(timeout=15)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.proc = subprocess.Popen(
                [self.kubectl.binary, f"--kubeconfig={self.kubectl.kubeconfig}", "get", self.kind,
                 "-n", self.namespace, "--watch", "--output-watch-events", "-o", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            lister = threading.Thread(target=self._list, daemon=True)
            lister.start()
            decoder, buffer = json.JSONDecoder(), ""
            for line in self.proc.stdout:
                buffer += line
                try:
                    doc, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    continue
                buffer = buffer.lstrip()[end:]
                if isinstance(doc, dict) and "object" in doc:
                    self.on_event(doc.get("type", ""), doc["object"])
            self.proc.wait()
            lister.join(timeout=30)
            if not self.stop_event.wait(0.5):
                self.restarts += 1

    def _list(self) -> None:
        for _ in range(60):
            if self.stop_event.is_set():
                return
            proc = self.kubectl.run("get", self.kind, "-n", self.namespace, "-o", "json", check=False)
            if proc.returncode == 0:
                self.on_listing(json.loads(proc.stdout)["items"])
                return
            time.sleep(0.5)


def _pod_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class ReadyFloor:
    """Ready serving pods (stable and canary tracks) per ModelDeployment, from every pod change."""

    def __init__(self, kubectl, namespace: str):
        self._pods: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._floors: dict[str, int] = {}
        self._lowest: dict[str, int] = {}
        self.dips: list[dict[str, Any]] = []
        self.changes = 0
        self.watch = KubectlWatch(kubectl, "pods", namespace, self._event, self._listing)

    def __enter__(self) -> "ReadyFloor":
        self.watch.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watch.stop()

    @staticmethod
    def _serving(pod: dict) -> str | None:
        labels = pod["metadata"].get("labels") or {}
        if labels.get(COMPONENT_LABEL) in JOB_COMPONENTS:
            return None
        return labels.get(MD_LABEL)

    def _event(self, kind: str, pod: dict) -> None:
        if not self._serving(pod):
            return
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(pod["metadata"]["name"], None)
            else:
                self._pods[pod["metadata"]["name"]] = pod
            self._observe()

    def _listing(self, pods: list[dict]) -> None:
        with self._lock:
            self._pods = {p["metadata"]["name"]: p for p in pods if self._serving(p)}
            self._observe()

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in self._pods.values():
            md = self._serving(pod)
            counts[md] = counts.get(md, 0) + (1 if _pod_ready(pod) else 0)
        return counts

    def _observe(self) -> None:
        self.changes += 1
        counts = self._counts()
        for md, floor in self._floors.items():
            now = counts.get(md, 0)
            self._lowest[md] = min(self._lowest.get(md, now), now)
            if now < floor:
                self.dips.append({"modelDeployment": md, "ready": now, "floor": floor, "at": time.monotonic()})

    def ready(self, md: str) -> int:
        with self._lock:
            return self._counts().get(md, 0)

    def arm(self, floors: dict[str, int]) -> None:
        """From now on, each listed ModelDeployment must keep at least its floor of ready pods."""
        with self._lock:
            self._floors = dict(floors)
            counts = self._counts()
            self._lowest = {md: counts.get(md, 0) for md in floors}

    def lowest(self) -> dict[str, int]:
        with self._lock:
            return dict(self._lowest)


class JobLedger:
    """Every Job uid seen per Job name, and the build Jobs per (ModelDeployment, build hash)."""

    def __init__(self, kubectl, namespace: str):
        self._uids: dict[str, set[str]] = {}
        self._builds: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.watch = KubectlWatch(kubectl, "jobs", namespace, lambda _t, job: self._see(job),
                                  lambda jobs: [self._see(j) for j in jobs])

    def __enter__(self) -> "JobLedger":
        self.watch.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watch.stop()

    def _see(self, job: dict) -> None:
        meta = job["metadata"]
        labels = meta.get("labels") or {}
        with self._lock:
            self._uids.setdefault(meta["name"], set()).add(meta["uid"])
            if labels.get(COMPONENT_LABEL) == "model-build" and labels.get(BUILD_HASH_LABEL):
                owner = next((r["name"] for r in meta.get("ownerReferences") or []), "?")
                self._builds.setdefault((owner, labels[BUILD_HASH_LABEL]), set()).add(meta["uid"])

    def build_jobs(self) -> dict[str, int]:
        """'owner/hash' -> how many distinct Jobs were ever seen for it (1 is right)."""
        with self._lock:
            return {f"{owner}/{h}": len(uids) for (owner, h), uids in self._builds.items()}

    def duplicates(self) -> dict[str, int]:
        """Job names and build hashes that had more than one Job over the run."""
        with self._lock:
            named = {name: len(uids) for name, uids in self._uids.items() if len(uids) > 1}
        return {**named, **{k: n for k, n in self.build_jobs().items() if n > 1}}

    def count(self) -> int:
        with self._lock:
            return len(self._uids)


# ---- convergence -------------------------------------------------------------------------------------

def _condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), {})


def unsettled(kube: Kube, namespace: str) -> dict[str, str]:
    """ModelDeployment -> why it is not settled yet; {} when every one is. Settled: status and every
    condition at the current generation; Ready=True Serving with the wanted replicas all ready;
    Progressing=False RolloutComplete; Degraded=False (or, autoscaled, AutoscalerFailing: the dev cluster
    has no metrics adapter, so the real HPA cannot read its metric); BuildSucceeded=True with a build;
    no canary left; the stable Deployment fully rolled out."""
    why: dict[str, str] = {}
    try:
        objects = kube.list(MD_API, "ModelDeployment", namespace)
        deployments = {d["metadata"]["name"]: d for d in kube.list("apps/v1", "Deployment", namespace)}
    except Exception as err:  # noqa: BLE001 - the API server may be away; not settled yet
        return {"*": f"cannot list: {err}"}
    for obj in objects:
        name, generation = obj["metadata"]["name"], obj["metadata"]["generation"]
        spec, status = obj["spec"], obj.get("status") or {}
        autoscaled = bool(spec.get("autoscaling"))
        wanted = spec["autoscaling"]["minReplicas"] if autoscaled else spec.get("replicas", 1)
        problems = []
        if status.get("observedGeneration") != generation:
            problems.append(f"observedGeneration {status.get('observedGeneration')} != {generation}")
        stale = [c["type"] for c in status.get("conditions") or [] if c.get("observedGeneration") != generation]
        if stale:
            problems.append(f"stale conditions {stale}")
        expected = {"Ready": ({"True"}, {"Serving"}), "Progressing": ({"False"}, {"RolloutComplete"}),
                    "Degraded": ({"False", "True"} if autoscaled else {"False"},
                                 {"AsExpected", "AutoscalerFailing"} if autoscaled else {"AsExpected"})}
        if spec.get("build"):
            expected["BuildSucceeded"] = ({"True"}, {"GatesPassed", "Fp32Fallback"})
        for ctype, (statuses, reasons) in expected.items():
            c = _condition(status, ctype)
            if c.get("status") not in statuses or c.get("reason") not in reasons:
                problems.append(f"{ctype}={c.get('status')} {c.get('reason')}")
        ready = status.get("readyReplicas") or 0
        if ready < wanted or (not autoscaled and ready != wanted):
            problems.append(f"readyReplicas {ready} (want {wanted})")
        phase = (status.get("rollout") or {}).get("phase")
        if phase not in (None, "Stable"):
            problems.append(f"rollout phase {phase}")
        build = status.get("build") or {}
        if spec.get("build") and (not build.get("hash") or build.get("servingHash") != build.get("hash")):
            problems.append(f"build {build.get('hash')} not served (serving {build.get('servingHash')})")
        if f"{name}-canary" in deployments:
            problems.append("canary still there")
        dep = deployments.get(name)
        if dep is None:
            problems.append("no Deployment")
        else:
            ds = dep.get("status") or {}
            replicas = dep["spec"].get("replicas", 1)
            if ds.get("observedGeneration") != dep["metadata"]["generation"] or any(
                    (ds.get(k) or 0) != replicas for k in ("updatedReplicas", "readyReplicas", "replicas")):
                problems.append(f"Deployment not rolled out ({ds.get('updatedReplicas')}/{ds.get('readyReplicas')}"
                                f"/{ds.get('replicas')} of {replicas})")
            image = (spec.get("serving") or {}).get("image")
            running = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
            if image and running != [image]:
                problems.append(f"Deployment runs {running}, spec asks for {image}")
            elif (ds.get("readyReplicas") or 0) != ready:
                problems.append(f"status.readyReplicas {ready} != Deployment's {ds.get('readyReplicas')}")
        if problems:
            why[name] = "; ".join(problems)
    return why


def wait_settled(kube: Kube, namespace: str, timeout: float, what: str = "") -> float:
    """Seconds until every ModelDeployment in `namespace` is settled; fails with the reasons after `timeout`."""
    started = time.monotonic()
    last: dict[str, str] = {}
    while time.monotonic() - started < timeout:
        last = unsettled(kube, namespace)
        if not last:
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"not settled after {timeout:.0f}s {what}: " + json.dumps(last, indent=1))


def diagnose(kube: Kube, namespace: str, op: OperatorProcess | None = None) -> str:
    """What a failed wait prints: each object's rollout status and conditions, the Jobs, the operator log tail."""
    lines = []
    try:
        for obj in kube.list(MD_API, "ModelDeployment", namespace):
            status = obj.get("status") or {}
            lines.append(f"{obj['metadata']['name']} gen {obj['metadata']['generation']}: "
                         f"rollout {json.dumps(status.get('rollout'))}")
            lines += [f"  {c['type']}={c['status']} {c['reason']} (gen {c.get('observedGeneration')}): "
                      f"{c.get('message', '')[:160]}" for c in status.get("conditions") or []]
        for job in kube.list("batch/v1", "Job", namespace):
            conditions = json.dumps((job.get("status") or {}).get("conditions"))[:300]
            lines.append(f"Job {job['metadata']['name']}: {conditions}"
                         f" annotations {list((job['metadata'].get('annotations') or {}))}")
        for pod in kube.list("v1", "Pod", namespace):
            status = pod.get("status") or {}
            lines.append(f"Pod {pod['metadata']['name']}: {status.get('phase')} on {pod['spec'].get('nodeName')}; "
                         + ", ".join(f"{c['type']}={c['status']} {c.get('reason', '')} {c.get('message', '')[:100]}"
                                     for c in status.get("conditions") or []))
    except Exception as err:  # noqa: BLE001
        lines.append(f"(cannot read: {err})")
    if op is not None:
        lines += ["operator log:", op.tail(80)]
    return "\n".join(lines)


def peakserve_events(kube: Kube, namespace: str | None) -> list[dict]:
    """The Events the operator posted (its reportingComponent), in one namespace or all."""
    return [e for e in kube.list("v1", "Event", namespace)
            if e.get("reportingComponent") == "peakserve" or (e.get("source") or {}).get("component") == "peakserve"]


def events_since(kube: Kube, namespace: str, before: set[str]) -> dict[str, list[str]]:
    """involvedObject name -> the reasons of the peakserve Events posted since (names not in `before`),
    oldest first."""
    found: dict[str, list[tuple[str, str]]] = {}
    for event in peakserve_events(kube, namespace):
        if event["metadata"]["name"] not in before:
            found.setdefault(event["involvedObject"]["name"], []).append(
                (event.get("lastTimestamp") or "", f"{event['type']} {event['reason']}"
                 + (f" ({event['message'][:90]})" if VERBOSE_EVENTS else "")))
    return {name: [reason for _, reason in sorted(seen)] for name, seen in found.items()}


def event_names(kube: Kube, namespace: str) -> set[str]:
    return {e["metadata"]["name"] for e in peakserve_events(kube, namespace)}


# ---- a Prometheus with nothing to say ----------------------------------------------------------------

class StubPrometheus:
    """Every /api/v1/query(_range) answers success with an empty result: analyses find no canary requests
    (the metric checks are skipped, not failed), capacity learning finds no history."""

    def __init__(self) -> None:
        self.port = free_port()
        self.queries = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                stub.queries += 1
                kind = "matrix" if "query_range" in self.path else "vector"
                body = json.dumps({"status": "success", "data": {"resultType": kind, "result": []}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "StubPrometheus":
        threading.Thread(target=self.server.serve_forever, name="stub-prometheus", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
