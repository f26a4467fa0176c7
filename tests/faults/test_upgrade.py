"""Upgrade with live objects (issue 12): the previous release's chart and operator serve two ModelDeployments,
one of them autoscaled inside an active promotion window; `helm upgrade` to the working tree's chart; then

- a serving pod is replaced only where the pod template that the two releases render really differs, and
  then through a rollout that keeps every ready pod (inside the promotion window the rollout is held: change
  freeze, and the stable pods keep serving);
- status stays continuous: every version of each ModelDeployment seen (a watch) keeps Ready=True with its
  lastTransitionTime, observedGeneration never goes back, and no condition of the object's first version
  changes status (Progressing may, where a new template rolls out);
- the operator posts no Events after the upgrade but those of such a rollout;
- planted credentials show nowhere (operator logs, Events, status).

KWOK runs no containers, so each operator runs here as its chart's pod would: its release's source, the args its
chart's Deployment renders, the token of its chart's ServiceAccount. The chart's pre-upgrade hook Job completes on
KWOK without running, so the test applies the CRD as the hook's container would, with the hook's identity."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.chart import admin_operators_paused, helm, token_kubeconfig
from integration.cluster import ROOT, condition, md, wait_for
from peakserve.cluster.client import Kube
from peakserve_harness.operator_process import OperatorProcess

from .figures import record
from .previous_release import PREVIOUS_RELEASE, Release, current_release, previous_release
from .rig import KubectlWatch, ReadyFloor, event_names, events_since
from .secrets import assert_no_leaks, plant

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

RELEASE, RELEASE_NAMESPACE = "ps-upgrade", "peakserve-upgrade"
PLAIN, SCHEDULED = "plain", "scheduled"
NAMES = (PLAIN, SCHEDULED)
REPLICAS = 2                # the plain object's replicas, and the scheduled one's promotion floor
STABLE_S = 4                # status unchanged this long before the upgrade starts
BASELINE_S = 2              # watched before the upgrade starts
SETTLE_S = 8                # watched after the current operator has reconciled both objects
ROLLOUT_TIMEOUT_S = 60      # for a pod template that did change
# What a rollout of a changed template posts; anything else from peakserve after the upgrade fails the test.
ROLLOUT_EVENTS = {"Normal RollingOut", "Normal RolloutComplete", "Normal CanaryStep", "Normal ChangeFreeze"}


class StatusVersions:
    """Every version of the namespace's ModelDeployments from a watch (a CRD upgrade ends watches on its objects
    while the API server re-creates their storage: the watch restarts, and its listing is a version too)."""

    def __init__(self, kubectl, namespace: str):
        self._seen: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.watch = KubectlWatch(kubectl, "modeldeployments", namespace, self._event, self._listing)

    def __enter__(self) -> "StatusVersions":
        self.watch.start()
        wait_for(lambda: all(self.of(n) for n in NAMES), timeout=20, what="the ModelDeployments listed")
        return self

    def __exit__(self, *exc) -> None:
        self.watch.stop()

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED":
            self._listing([obj])

    def _listing(self, objects: list[dict[str, Any]]) -> None:
        with self._lock:
            for obj in objects:
                self._seen.setdefault(obj["metadata"]["name"], []).append(obj)

    def of(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._seen.get(name, []))


class StableReadyReplicas:
    """The lowest readyReplicas of each stable Deployment, from a watch."""

    def __init__(self, kubectl, namespace: str):
        self.lowest: dict[str, int] = {}
        self._lock = threading.Lock()
        self.watch = KubectlWatch(kubectl, "deployments", namespace, lambda _kind, d: self._listing([d]),
                                  self._listing)

    def __enter__(self) -> "StableReadyReplicas":
        self.watch.start()
        wait_for(lambda: all(n in self.lowest for n in NAMES), timeout=20, what="the Deployments listed")
        return self

    def __exit__(self, *exc) -> None:
        self.watch.stop()

    def _listing(self, deployments: list[dict[str, Any]]) -> None:
        with self._lock:
            for d in deployments:
                name, ready = d["metadata"]["name"], _ready_replicas(d)
                self.lowest[name] = min(self.lowest.get(name, ready), ready)


def _operator(release: Release, kubectl, tmp_path: Path) -> OperatorProcess:
    """The release's operator as its chart's Deployment runs it: its args, its ServiceAccount's token."""
    service_account, args = release.operator_pod(RELEASE, RELEASE_NAMESPACE)
    tag = release.label.replace(" ", "-")
    config = token_kubeconfig(kubectl, RELEASE_NAMESPACE, service_account, tmp_path / f"{tag}.kubeconfig")
    return OperatorProcess(config, tmp_path / f"operator-{tag}.log", command=release.peakserve, args=args)


def _run_pre_upgrade_hook(release: Release, kubectl, tmp_path: Path) -> None:
    """What the chart's pre-upgrade hook Job does, with the hook's own identity: `peakserve crds apply` of the
    release being installed. (Helm still runs the hook; KWOK completes its pod without running it.)"""
    docs = release.chart_objects(RELEASE, RELEASE_NAMESPACE, "templates/crd-upgrade.yaml")
    [job] = [d for d in docs if d["kind"] == "Job"]
    identity = [d for d in docs if d["kind"] != "Job"]
    for d in identity:
        d["metadata"].pop("annotations", None)
    kubectl.apply(identity)
    try:
        config = token_kubeconfig(kubectl, RELEASE_NAMESPACE, job["spec"]["template"]["spec"]["serviceAccountName"],
                                  tmp_path / "hook.kubeconfig")
        assert "Established" in release.cli("crds", "apply", "--kubeconfig", str(config)).stdout
    finally:  # Helm creates the hook's identity itself, and deletes it when the hook succeeds
        kubectl.run("delete", "-f", "-", "--wait=true", input=yaml.safe_dump_all(identity), check=False)


def _pod_template(children: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [c for c in children if c["kind"] == "Deployment"]
    return deployment["spec"]["template"]


def _annotations(template: dict[str, Any]) -> dict[str, str]:
    return (template.get("metadata") or {}).get("annotations") or {}


def _diff(before: dict[str, Any], after: dict[str, Any], label: str) -> list[str]:
    return list(difflib.unified_diff(yaml.safe_dump(before).splitlines(), yaml.safe_dump(after).splitlines(),
                                     f"{label} ({PREVIOUS_RELEASE})", f"{label} (working tree)", lineterm=""))


def _pods(kubectl, ns: str, deployment: dict[str, Any]) -> dict[str, str]:
    """uid -> name of the serving pods (either track) of a Deployment's ModelDeployment."""
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    return {p["metadata"]["uid"]: p["metadata"]["name"] for p in kubectl.list("pods", ns, selector)
            if not p["metadata"].get("deletionTimestamp")}


def _ready_replicas(deployment: dict[str, Any]) -> int:
    return (deployment.get("status") or {}).get("readyReplicas") or 0


def _rollout(kubectl, ns: str, name: str) -> dict[str, Any]:
    return (kubectl.get("modeldeployment", name, ns).get("status") or {}).get("rollout") or {}


def _held(kubectl, ns: str, name: str) -> bool:
    """A new pod template waits for the active promotion to end (change freeze); the stable pods serve."""
    rollout = _rollout(kubectl, ns, name)
    return rollout.get("phase") == "Held" and rollout.get("reason") == "ChangeFreeze"


def _rolled_out(kubectl, ns: str, name: str, template: dict[str, Any]) -> bool:
    """The stable Deployment runs the new template on every replica, all ready, no old pod left, no canary."""
    deployment = kubectl.get("deployment", name, ns)
    status, wanted = deployment.get("status") or {}, deployment["spec"].get("replicas") or 0
    return (_annotations(template).items() <= _annotations(deployment["spec"]["template"]).items()
            and status.get("observedGeneration") == deployment["metadata"]["generation"]
            and status.get("updatedReplicas") == wanted == status.get("readyReplicas") == status.get("replicas")
            and _rollout(kubectl, ns, name).get("phase") == "Stable")


def _settled(kubectl, ns: str) -> dict[str, str] | None:
    """Both objects serving: Ready at their generation, every replica ready, the promotion floor held by the HPA
    (which has synced once). Returns their resourceVersions."""
    versions = {}
    for name in NAMES:
        obj, deployment = kubectl.get("modeldeployment", name, ns), kubectl.get("deployment", name, ns)
        if not obj or not deployment or condition(obj, "Ready").get("status") != "True":
            return None
        if obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        if _ready_replicas(deployment) < REPLICAS:
            return None
        versions[name] = obj["metadata"]["resourceVersion"]
    hpa = kubectl.get("hpa", SCHEDULED, ns)
    if not hpa or hpa["spec"]["minReplicas"] != REPLICAS or not (hpa.get("status") or {}).get("conditions"):
        return None
    autoscaling = kubectl.get("modeldeployment", SCHEDULED, ns)["status"].get("autoscaling") or {}
    return versions if autoscaling.get("activeSchedule") == "peak" else None


def _stable(kubectl, ns: str, seconds: float) -> bool:
    first = _settled(kubectl, ns)
    time.sleep(seconds)
    return bool(first) and _settled(kubectl, ns) == first


def _reconciles(op: OperatorProcess) -> float:
    try:
        return op.metrics().get('peakserve_reconcile_total{result="success"}', 0.0)
    except OSError:
        return 0.0


def _status_breaks(versions: list[dict[str, Any]], may_progress: bool) -> list[str]:
    """Where a ModelDeployment's status was not continuous with its first version: Ready not True or its
    lastTransitionTime moved, observedGeneration went back, a condition of the first version changed status or
    transition time (Progressing may, when a new pod template rolls out)."""
    breaks: list[str] = []
    first = {c["type"]: c for c in versions[0]["status"]["conditions"]}
    generation = versions[0]["status"]["observedGeneration"]
    for n, obj in enumerate(versions[1:], 1):
        status = obj.get("status") or {}
        now = {c["type"]: c for c in status.get("conditions") or []}
        ready = now.get("Ready", {})
        if ready.get("status") != "True" or ready.get("lastTransitionTime") != first["Ready"]["lastTransitionTime"]:
            breaks.append(f"version {n}: Ready {ready}")
        if (status.get("observedGeneration") or 0) < generation:
            breaks.append(f"version {n}: observedGeneration {status.get('observedGeneration')} < {generation}")
        generation = max(generation, status.get("observedGeneration") or 0)
        for ctype, was in first.items():
            if ctype == "Progressing" and may_progress:
                continue
            c = now.get(ctype, {})
            if (c.get("status"), c.get("lastTransitionTime")) != (was["status"], was["lastTransitionTime"]):
                breaks.append(f"version {n}: {ctype} {was['status']} -> {c.get('status')} ({c.get('reason')})")
    return breaks


def _print_state(kubectl, ns: str, operators: list[OperatorProcess]) -> None:
    """What a failure needs to be understood: the objects, their Deployments and pods, the operators' logs."""
    for kind in ("modeldeployments", "deployments", "pods"):
        print(kubectl.run("get", kind, "-n", ns, "-o", "wide", check=False).stdout)
    for obj in kubectl.list("modeldeployments", ns):
        print(obj["metadata"]["name"], json.dumps(obj.get("status"), indent=1))
    for op in operators:
        print(f"--- {op.log_path.name}\n{op.tail(60)}")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def _crd_names(kubectl) -> set[str]:
    return {c["metadata"]["name"] for c in json.loads(kubectl.run("get", "crd", "-o", "json").stdout)["items"]}


def test_helm_upgrade_keeps_live_model_deployments_serving(cluster, kubectl, ns, tmp_path):
    started = time.monotonic()
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    previous, current = previous_release(tmp_path / PREVIOUS_RELEASE), current_release()
    for release in (previous, current):   # each operator really runs its own release's code
        imported = release.imported_from()
        assert imported.is_relative_to(release.root / "operator"), (release.label, imported)
        print(f"{release.label}: peakserve from {imported}")

    crds_before = _crd_names(kubectl)
    operators: list[OperatorProcess] = []
    with admin_operators_paused():
        try:
            # 1. The previous release: its CRDs (Helm skips a CRD that exists, and the session has the current
            # one: apply them as the first install would leave them), its chart, its operator from its source.
            for path in previous.crd_files:
                kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=helm", "-f", str(path))
            helm(cluster, "install", RELEASE, str(previous.chart), "-n", RELEASE_NAMESPACE, "--create-namespace",
                 "--wait", "--timeout=90s")
            old = _operator(previous, kubectl, tmp_path)
            operators.append(old)
            old.start()
            assert f"PYTHONPATH={previous.root / 'operator'}" in Path(f"/proc/{old.proc.pid}/environ").read_text()

            # 2. Live objects: one with fixed replicas and its model fetched from S3 with a planted Secret, one
            # autoscaled inside an active promotion window (floor 2) until well after the test.
            planted = plant(kubectl, ns, seed=12, current_crd=False)  # under the previous release's CRD
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            window = {"name": "peak", "timezone": "UTC", "minReplicas": REPLICAS,
                      "start": (now - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S"),
                      "end": (now + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")}
            kubectl.apply([md(PLAIN, ns, replicas=REPLICAS, model=planted.model_source()),
                           md(SCHEDULED, ns, autoscaling={"minReplicas": 1, "maxReplicas": 3, "engine": "hpa",
                                                          "leadTimeSeconds": 60, "schedules": [window]})])
            wait_for(lambda: _settled(kubectl, ns), timeout=60, what="both objects served by the previous release")
            wait_for(lambda: _stable(kubectl, ns, STABLE_S), timeout=40, interval=0, what="status to stop changing")

            deployments = {n: kubectl.get("deployment", n, ns) for n in NAMES}
            pods_before = {n: _pods(kubectl, ns, deployments[n]) for n in NAMES}
            ready_before = {n: _ready_replicas(deployments[n]) for n in NAMES}
            rollouts_before = {n: _rollout(kubectl, ns, n) for n in NAMES}
            rendered_before = {n: _pod_template(previous.render(kubectl.get("modeldeployment", n, ns)))
                               for n in NAMES}
            for n in NAMES:   # what the previous release renders is what its operator applied
                assert _annotations(rendered_before[n]).items() <= \
                    _annotations(deployments[n]["spec"]["template"]).items(), n
            events_before = event_names(kube, ns)

            # 3. `helm upgrade` to the working tree's chart, everything watched.
            with StatusVersions(kubectl, ns) as statuses, StableReadyReplicas(kubectl, ns) as stable, \
                    ReadyFloor(kubectl, ns) as ready:
                wait_for(lambda: all(ready.ready(n) == ready_before[n] for n in NAMES), timeout=20,
                         what="the ready pods listed")
                ready.arm(ready_before)
                time.sleep(BASELINE_S)
                upgrade_t = time.monotonic()
                _run_pre_upgrade_hook(current, kubectl, tmp_path)
                upgrade = helm(cluster, "upgrade", RELEASE, str(current.chart), "-n", RELEASE_NAMESPACE, "--wait",
                               "--timeout=90s")
                assert "STATUS: deployed" in upgrade.stdout
                helm_done_t = time.monotonic()
                # The hook Job ran (KWOK completed its pod) and Helm deleted it on success.
                history = json.loads(helm(cluster, "history", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
                assert [r["status"] for r in history] == ["superseded", "deployed"], history
                assert kubectl.list("jobs", RELEASE_NAMESPACE) == []
                # The chart's Deployment rolls (Recreate): the previous operator goes, then the current one starts.
                old.stop()
                new = _operator(current, kubectl, tmp_path)
                operators.append(new)
                new.start()
                wait_for(lambda: _reconciles(new) >= len(NAMES), timeout=60, interval=0.1,
                         what="the current operator to reconcile both objects")
                reconciled_t = time.monotonic()

                rendered_after = {n: _pod_template(current.render(kubectl.get("modeldeployment", n, ns)))
                                  for n in NAMES}
                changes = {n: _diff(rendered_before[n], rendered_after[n], f"{n} pod template") for n in NAMES}
                for n in NAMES:
                    if changes[n]:   # it rolls out, or waits for the promotion to end (change freeze)
                        print("\n".join(changes[n]))
                        wait_for(lambda: _rolled_out(kubectl, ns, n, rendered_after[n]) or _held(kubectl, ns, n),
                                 timeout=ROLLOUT_TIMEOUT_S, what=f"{n}'s new pod template rolled out or held")
                time.sleep(SETTLE_S)

            # 4. Pods replaced only where the rendered template changed; status continuous; no stray Events.
            deployments_after = {n: kubectl.get("deployment", n, ns) for n in NAMES}
            pods_after = {n: _pods(kubectl, ns, deployments_after[n]) for n in NAMES}
            replaced = {n: sorted(pods_before[n][uid] for uid in set(pods_before[n]) - set(pods_after[n]))
                        for n in NAMES}
            live_changes = {n: _diff(deployments[n]["spec"]["template"], deployments_after[n]["spec"]["template"],
                                     f"{n} live pod template") for n in NAMES}
            held = {n: bool(changes[n]) and _held(kubectl, ns, n) for n in NAMES}
            rolled = {n: bool(changes[n]) and not held[n] for n in NAMES}
            rollouts_after = {n: _rollout(kubectl, ns, n) for n in NAMES}
            versions = {n: statuses.of(n) for n in NAMES}
            breaks = {n: _status_breaks(versions[n], may_progress=bool(changes[n])) for n in NAMES}
            events = events_since(kube, ns, events_before)
            stray = {n: [e for e in reasons if not changes.get(n) or e not in ROLLOUT_EVENTS]
                     for n, reasons in events.items()}
            stray = {n: reasons for n, reasons in stray.items() if reasons}
            lowest = ready.lowest()
            secrets = assert_no_leaks(planted, kubectl, logs=[op.log_path for op in operators])

            figures = {
                "previousCommit": _git("rev-parse", PREVIOUS_RELEASE),
                "previousCommitIs": "the last commit that landed with CI green (issue 11)",
                "currentHead": _git("rev-parse", "HEAD"),
                "currentOperatorOrChartEditedSinceHead": bool(_git("status", "--porcelain", "--", "operator",
                                                                   "charts", "crds")),
                "objects": {PLAIN: f"replicas {REPLICAS}, model from S3 with a planted Secret",
                            SCHEDULED: f"hpa 1-3, promotion 'peak' active (floor {REPLICAS}) across the upgrade"},
                "readyBefore": ready_before,
                "podsReplaced": {n: len(replaced[n]) for n in NAMES},
                "templateChanged": {n: bool(changes[n]) for n in NAMES},
                "templateDiff": {n: changes[n] for n in NAMES if changes[n]},
                "newTemplateHeldByChangeFreeze": held,
                "liveTemplateChanged": {n: bool(live_changes[n]) for n in NAMES},
                "rolloutStableHash": {n: [rollouts_before[n].get("stableHash"), rollouts_after[n].get("stableHash")]
                                      for n in NAMES},
                "lowestReadyPods": lowest,
                "readyDipsBelowBefore": len(ready.dips),
                "lowestReadyReplicasOfTheStableDeployment": {n: stable.lowest[n] for n in NAMES},
                "statusVersionsSeen": {n: len(versions[n]) for n in NAMES},
                "statusWritesAfterUpgrade": {n: len({v["metadata"]["resourceVersion"] for v in versions[n]}) - 1
                                             for n in NAMES},
                "statusBreaks": breaks,
                "watchRestarts": {"modeldeployments": statuses.watch.restarts, "deployments": stable.watch.restarts,
                                  "pods": ready.watch.restarts},
                "eventsAfterUpgrade": events,
                "secondsUpgradeToCurrentOperatorReconciling": round(reconciled_t - upgrade_t, 1),
                "secondsHelmUpgradeWithHook": round(helm_done_t - upgrade_t, 1),
                "secretsScan": secrets,
                "wallSeconds": round(time.monotonic() - started, 1),
                "checked": [
                    "pods replaced only where the rendered pod template changed (previous vs working-tree "
                    "`peakserve render` of the live object), and then all of them through a rollout; the live "
                    "Deployment template unchanged otherwise",
                    "ready serving pods (both tracks) never below before (pod watch); the stable Deployment's "
                    "readyReplicas never below before where no rollout ran (Deployment watch)",
                    "every ModelDeployment version seen (watch): Ready True with its lastTransitionTime, "
                    "observedGeneration never back, the first version's conditions unchanged (Progressing may "
                    "change with a rollout)",
                    "the operator's Events after the upgrade: none, or a rollout's",
                    "the current operator, with the chart ServiceAccount's token, refused nothing",
                    "planted credentials absent from both operator logs, all Events, all statuses"],
            }
            print(json.dumps(figures, indent=2))

            for n in NAMES:
                assert lowest[n] >= ready_before[n], (n, lowest[n], ready_before[n], ready.dips)
                assert not breaks[n], (n, breaks[n])
                if rolled[n]:
                    assert len(replaced[n]) == len(pods_before[n]), (n, replaced[n])
                else:
                    assert not replaced[n], f"{n}: pods {replaced[n]} replaced, yet no new pod template was due"
                    assert not live_changes[n], "\n".join(live_changes[n])
                    assert stable.lowest[n] >= ready_before[n], (n, stable.lowest[n], ready_before[n])
                if not changes[n]:
                    assert rollouts_after[n].get("stableHash") == rollouts_before[n].get("stableHash")
            assert not stray, stray
            log = new.log_path.read_text()
            assert "Forbidden" not in log and "forbidden" not in log, log[-3000:]
            record("upgrade", figures)
        except BaseException:
            _print_state(kubectl, ns, operators)
            raise
        finally:
            for op in operators:
                op.stop()
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                helm(cluster, "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout=60s")
            kubectl.run("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)
            kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
            for name in _crd_names(kubectl) - crds_before:   # the previous release's CRDs the session lacked
                kubectl.run("delete", "crd", name, "--wait=false", check=False)
