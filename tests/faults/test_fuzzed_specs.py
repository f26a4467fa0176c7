"""Fuzzed specs against the real API server and a real operator (issue 12, part 2).

At least 500 ModelDeployment specs, drawn by hypothesis from the CRD's own schema (fuzz/strategies.py): valid
ones, ones with one schema violation, ones with one thing Triton refuses at load time. The regression cases
of fuzz/regressions.yaml go first. Each is created through the real API server (strict field validation,
as kubectl does) and must end one of two ways:

- refused at apply, with a message that names the field (the mutated one, where one was mutated);
- accepted, and then given a status by the operator: Ready with a reason, InvalidSpec where only the operator
  can see the problem. An InvalidSpec object has no Deployment, Job, Service or ConfigMap; any other object's
  rendered config.pbtxt passes fuzz/triton_rules.py, what Triton checks when it loads a model.

Throughout, a sentinel ModelDeployment serves in its own namespace: at the end its Deployment has the same
generation and pod template and it is still Ready. The operator stays alive, counts no `exception` reconcile
errors, and once everything has settled it neither writes status nor reconciles more than its drift loop does
(no loop). The run's counts go to fuzz/last-run.json.

The cases are drawn derandomized, so every run applies the same ones for a given schema and hypothesis
version. Batches of BATCH objects share NAMESPACES namespaces; each batch but the last KEPT is deleted before
the next one, so the cluster holds at most KEPT batches of fuzzed objects. PEAKSERVE_FUZZ_EXAMPLES changes the
count (default 520).
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from integration.cluster import condition, md, wait_for
from peakserve.api.validation import InvalidSpec, parse_spec
from peakserve.cluster.client import ApiException, Kube, error_message, resource_path

from .fuzz.strategies import Case, Mutation, draw_cases, load_regressions
from .fuzz.triton_rules import triton_refusals

HERE = Path(__file__).resolve().parent
RESULT_PATH = HERE / "fuzz" / "last-run.json"
EXAMPLES = int(os.environ.get("PEAKSERVE_FUZZ_EXAMPLES", "520"))
BATCH = 40
KEPT = 2                      # batches left in place for the loop check at the end
NAMESPACES = ("fz-a", "fz-b", "fz-c")
STATUS_TIMEOUT = 180.0
LOOP_WINDOW = 10.0
QUIET_TRIES = 4               # windows of LOOP_WINDOW seconds to wait for one without a status write
DRIFT_INTERVAL = 3.0          # the session operator's (integration/conftest.py)
MD = ("peakserve.io/v1alpha1", "ModelDeployment")
CHILD_KINDS = (("apps/v1", "Deployment"), ("batch/v1", "Job"), ("v1", "Service"), ("v1", "ConfigMap"))
FIELD = re.compile(r"\bspec(?:\.[A-Za-z0-9_-]+|\[\d+\])+")

pytestmark = pytest.mark.timeout(900)


def regression_cases() -> list[tuple[str, Case]]:
    out = []
    for entry in load_regressions():
        mutation = Mutation("regression", entry["id"], entry.get("names", ""), entry["expect"], entry.get("names", ""))
        out.append((f"fz-r-{entry['id']}", Case(entry["spec"], mutation)))
    return out


def reconciles(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("peakserve_reconcile_total{"))


def errors_by_kind(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith("peakserve_reconcile_errors_total{"):
            out[re.search(r'error="([^"]*)"', key).group(1)] = value
    return out


def create(kube: Kube, namespace: str, name: str, spec: Any) -> str | None:
    """None when the API server stored it, else its refusal."""
    body = {"apiVersion": MD[0], "kind": MD[1], "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    try:
        kube.call("POST", resource_path(*MD, namespace), body=body, query=[("fieldValidation", "Strict")])
    except ApiException as err:
        return error_message(err)
    return None


def settled(obj: dict[str, Any]) -> bool:
    ready = condition(obj, "Ready")
    return bool(ready.get("reason")) and ready.get("observedGeneration") == obj["metadata"]["generation"]


def owned(kube: Kube, namespace: str) -> dict[str, list[str]]:
    """owner uid -> 'Kind/name' of every child in the namespace."""
    out: dict[str, list[str]] = collections.defaultdict(list)
    for api_version, kind in CHILD_KINDS:
        for item in kube.list(api_version, kind, namespace):
            for ref in item["metadata"].get("ownerReferences") or []:
                out[ref["uid"]].append(f"{kind}/{item['metadata']['name']}")
    return out


def check_refusal(case: Case, message: str) -> str | None:
    """Why this refusal breaks the rules, or None."""
    mutation = case.mutation
    if mutation and mutation.expect != "refused":
        return f"refused at apply, expected {mutation.expect}: {message}"
    if mutation and mutation.names and mutation.names not in message:
        return f"the refusal does not name {mutation.names}: {message}"
    if not FIELD.search(message):
        return f"the refusal names no field: {message}"
    return None


def check_status(case: Case, obj: dict[str, Any], children: list[str], config: str | None) -> str | None:
    ready = condition(obj, "Ready")
    mutation = case.mutation
    if mutation and mutation.expect == "refused":
        return f"accepted at apply; expected a refusal naming {mutation.names} (Ready: {ready.get('reason')})"
    if ready["reason"] == "InvalidSpec":
        if mutation and mutation.expect == "served":
            return f"InvalidSpec, expected it served: {ready.get('message')}"
        if not ready.get("message"):
            return "InvalidSpec without a message"
        if children:
            return f"InvalidSpec, yet the operator created {children}"
        if mutation and mutation.names and mutation.names not in ready["message"]:
            return f"InvalidSpec does not name {mutation.names}: {ready['message']}"
        return None
    if mutation and mutation.expect == "invalid-spec":
        return f"expected InvalidSpec naming {mutation.names}, got Ready={ready['status']} {ready['reason']}"
    try:
        spec = parse_spec(obj["spec"])
    except InvalidSpec as err:
        return f"served ({ready['reason']}), yet parse_spec refuses it: {err}"
    if config is not None:
        refused = triton_refusals(config, spec.serving.gpus)
        if refused:
            return f"served ({ready['reason']}) with a config Triton refuses: {refused}"
    return None


def config_of(kube: Kube, namespace: str, uid: str, children: list[str]) -> str | None:
    for child in children:
        kind, name = child.split("/", 1)
        if kind == "ConfigMap":
            cm = kube.get("v1", "ConfigMap", namespace, name) or {}
            if "config.pbtxt" in (cm.get("data") or {}):
                return cm["data"]["config.pbtxt"]
    return None


def run_batch(kube: Kube, namespace: str, batch: list[tuple[str, Case]]) -> list[dict[str, Any]]:
    results = []
    for name, case in batch:
        refusal = create(kube, namespace, name, case.spec)
        results.append({"name": name, "case": case, "refusal": refusal})
    accepted = {r["name"] for r in results if r["refusal"] is None}

    def statuses() -> tuple[dict[str, dict[str, Any]]] | None:  # a tuple: truthy even when nothing was accepted
        objs = {o["metadata"]["name"]: o for o in kube.list(*MD, namespace)}
        return (objs,) if all(n in objs and settled(objs[n]) for n in accepted) else None

    try:
        (objs,) = wait_for(statuses, timeout=STATUS_TIMEOUT, interval=1.0, what=f"statuses in {namespace}")
    except AssertionError:  # reported per object below
        objs = {o["metadata"]["name"]: o for o in kube.list(*MD, namespace)}
    children = owned(kube, namespace)
    for r in results:
        case = r["case"]
        if r["refusal"] is not None:
            r["outcome"] = "refused"
            r["problem"] = check_refusal(case, r["refusal"])
            continue
        obj = objs.get(r["name"])
        if obj is None or not settled(obj):
            r["outcome"], r["problem"] = "no-status", f"no Ready condition for this generation after {STATUS_TIMEOUT}s"
            continue
        ready = condition(obj, "Ready")
        r["outcome"] = "invalid-spec" if ready["reason"] == "InvalidSpec" else "accepted"
        r["ready"] = f"{ready['status']}/{ready['reason']}"
        r["message"] = ready.get("message", "")
        mine = children.get(obj["metadata"]["uid"], [])
        r["problem"] = check_status(case, obj, mine, config_of(kube, namespace, obj["metadata"]["uid"], mine))
    return results


def delete_all(kube: Kube, namespace: str) -> None:
    for obj in kube.list(*MD, namespace):
        try:
            kube.delete(*MD, namespace, obj["metadata"]["name"])
        except ApiException as err:
            if err.status != 404:
                raise


def sentinel_state(kube: Kube, namespace: str) -> dict[str, Any]:
    obj = kube.get(*MD, namespace, "sentinel")
    deployments = [d for d in kube.list("apps/v1", "Deployment", namespace)
                   if any(ref["uid"] == obj["metadata"]["uid"] for ref in d["metadata"].get("ownerReferences") or [])]
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    dep = deployments[0]
    return {"ready": condition(obj, "Ready").get("status"), "generation": dep["metadata"]["generation"],
            "template": dep["spec"]["template"], "readyReplicas": dep["status"].get("readyReplicas")}


def field_of(message: str) -> str:
    """The first field a refusal names, list indices dropped: spec.model.inputs[0].dims[1] -> spec.model.inputs.dims."""
    found = FIELD.search(message)
    return re.sub(r"\[\d+\]", "", found.group(0)) if found else "(none)"


def summary(results: list[dict[str, Any]], seconds: float, settle: dict[str, Any]) -> dict[str, Any]:
    by_family: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:
        by_family[r["case"].family][r["outcome"]] += 1
        if r["case"].mutation:
            kinds[r["case"].mutation.kind][r["outcome"]] += 1
    outcomes = collections.Counter(r["outcome"] for r in results)
    return {
        "what": "tests/faults/test_fuzzed_specs.py: hypothesis-drawn ModelDeployment specs against the real "
                "API server and a real operator (make test-faults). The cases, and so the refused / accepted / "
                "InvalidSpec counts, are the same on every run for a given schema and hypothesis version; the "
                "Ready reasons of accepted objects (pods ready yet or not) and the seconds are not.",
        "hypothesis": hypothesis.__version__,
        "examples": EXAMPLES,
        "total": len(results),
        "refused_by_schema": outcomes["refused"],
        "accepted": outcomes["accepted"],
        "invalid_spec": outcomes["invalid-spec"],
        "no_status": outcomes["no-status"],
        "problems": sum(1 for r in results if r.get("problem")),
        "by_family": {f: dict(sorted(c.items())) for f, c in sorted(by_family.items())},
        "by_mutation": {k: dict(sorted(c.items())) for k, c in sorted(kinds.items())},
        "refused_by_field": dict(collections.Counter(field_of(r["refusal"]) for r in results
                                                     if r["outcome"] == "refused").most_common()),
        "ready": dict(collections.Counter(r["ready"] for r in results if "ready" in r).most_common()),
        "invalid_spec_by_field": dict(collections.Counter(field_of(r["message"]) for r in results
                                                          if r["outcome"] == "invalid-spec").most_common()),
        "after": settle,
        "seconds": round(seconds, 1),
    }


def test_fuzzed_specs(cluster, kubectl, operator):
    started = time.monotonic()
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    for namespace in (*NAMESPACES, "fz-sentinel"):
        kubectl.run("create", "namespace", namespace, check=False)
    kubectl.apply(md("sentinel", "fz-sentinel", replicas=1))
    wait_for(lambda: condition(kube.get(*MD, "fz-sentinel", "sentinel"), "Ready").get("status") == "True",
             timeout=120, what="the sentinel to serve")
    sentinel_before = sentinel_state(kube, "fz-sentinel")
    errors_before = errors_by_kind(operator.metrics())

    drawn = [(f"fz-{i:04d}", case) for i, case in enumerate(draw_cases(EXAMPLES))]
    random.Random(12).shuffle(drawn)  # every batch mixes the families, the last one (kept for the loop check) too
    cases = regression_cases() + drawn
    results: list[dict[str, Any]] = []
    batches = [cases[i:i + BATCH] for i in range(0, len(cases), BATCH)]
    batch_seconds = []
    for number, batch in enumerate(batches):
        namespace = NAMESPACES[number % len(NAMESPACES)]
        began = time.monotonic()
        results += run_batch(kube, namespace, batch)
        batch_seconds.append(round(time.monotonic() - began, 1))
        assert operator.alive(), operator.tail()
        if number < len(batches) - KEPT:  # the last batches stay for the loop check
            delete_all(kube, namespace)

    # Settled: the drift loop alone reconciles, and nobody's status changes.
    kept = {NAMESPACES[number % len(NAMESPACES)] for number in range(len(batches))[-KEPT:]}

    def live_objects() -> list[dict[str, Any]]:
        return [o for namespace in sorted(kept) for o in kube.list(*MD, namespace)]

    live = live_objects()
    # A new object's status still moves for a while (its HPA reports, its pods turn ready); a loop never stops.
    for windows in range(1, QUIET_TRIES + 1):
        versions = {o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in live_objects()}
        before = reconciles(operator.metrics())
        time.sleep(LOOP_WINDOW)
        passes = reconciles(operator.metrics()) - before
        changed = sorted(o["metadata"]["name"] for o in live_objects()
                         if versions.get(o["metadata"]["uid"]) != o["metadata"]["resourceVersion"])
        if not changed:
            break
    # Every live object once per drift interval, plus the sentinel, plus slack for a few child events.
    bound = (len(live) + 1) * (LOOP_WINDOW / DRIFT_INTERVAL + 1) + 20
    errors = {k: v - errors_before.get(k, 0) for k, v in errors_by_kind(operator.metrics()).items()
              if v - errors_before.get(k, 0)}
    sentinel_after = sentinel_state(kube, "fz-sentinel")
    settle = {"live_objects": len(live), "windows_until_quiet": windows, "reconciles_in_window": passes,
              "window_seconds": LOOP_WINDOW,
              "reconcile_bound": bound, "status_changed_in_window": changed, "reconcile_errors": errors,
              "sentinel_unchanged": sentinel_after == sentinel_before, "operator_alive": operator.alive(),
              "batch_seconds": batch_seconds}
    report = summary(results, time.monotonic() - started, settle)
    RESULT_PATH.write_text(json.dumps(report, indent=2) + "\n")
    for namespace in kept:
        delete_all(kube, namespace)

    problems = [f"{r['name']} [{r['case'].family}/{r['case'].mutation.kind if r['case'].mutation else 'valid'}] "
                f"{r['problem']}\n    spec: {json.dumps(r['case'].spec)[:600]}"
                for r in results if r.get("problem")]
    assert not problems, f"{len(problems)} of {len(results)} cases broke a rule:\n" + "\n".join(problems[:30])
    assert len(results) >= 500
    assert operator.alive(), operator.tail()
    assert errors.get("exception", 0) == 0, (errors, operator.tail())
    assert sentinel_after == sentinel_before, (sentinel_before, sentinel_after)
    assert sentinel_after["ready"] == "True"
    assert passes <= bound, f"{passes} reconciles in {LOOP_WINDOW}s with {len(live)} objects: a loop"
    assert not changed, f"status still changing after everything settled: {changed}"
