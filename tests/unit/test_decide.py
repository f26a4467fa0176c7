"""decide(spec, snapshot, now) as data: the cases in decide_tables/cases.yaml, each a snapshot in and a
plan out. `expect` states the facts each case is about; the whole plan is pinned in decide_tables/plans/.

After a deliberate change, `make golden` rewrites the plans (review the diff); `expect` never changes
by itself.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from peakserve.api.identity import build_hash
from peakserve.api.spec import ModelDeploymentSpec
from peakserve.api.validation import spec_or_reason
from peakserve.decide import decide
from peakserve.decide.rollout import template_hash_of
from peakserve.render import render_children
from peakserve.render.owner import Owner
from peakserve.decide.snapshot import Snapshot, first_reads, second_reads
from peakserve.yamlio import dump

TABLES = Path(__file__).parent / "decide_tables"
CASES = yaml.safe_load((TABLES / "cases.yaml").read_text())["cases"]
UPDATE = os.environ.get("PEAKSERVE_UPDATE_GOLDEN") == "1"
DEFAULT_NOW = "2026-11-10T09:30:00Z"
UID = "6f1c2a3e-0000-4000-8000-000000000001"  # the ownerReferences uid of cases.yaml
SLOTS = ("deployment", "hpa", "scaled_object", "headroom", "build_job", "pods", "build_pods",
         "canary", "analysis_job", "analysis_pods", "claim", "nodes", "node_pods")
LISTS = ("pods", "build_pods", "analysis_pods", "nodes", "node_pods")
CURRENT = "CURRENT"  # in a case: the pod-template hash the case's own spec renders


def current_template_hash(spec: dict[str, Any], name: str) -> str:
    parsed = spec_or_reason(spec)
    owner = Owner(name, "shop", UID)
    bhash = build_hash(parsed) if parsed.build else None
    deployment = next(c for c in render_children(owner, parsed, bhash) if c["kind"] == "Deployment")
    return template_hash_of(deployment)


def resolve(value: Any, current: str) -> Any:
    if isinstance(value, dict):
        return {k: resolve(v, current) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, current) for v in value]
    return value.replace(CURRENT, current) if isinstance(value, str) else value


def resolved(case: dict[str, Any]) -> dict[str, Any]:
    """The case with CURRENT replaced by the template hash of its own spec (when the spec is valid)."""
    spec = case["modelDeployment"].get("spec")
    if not isinstance(spec_or_reason(spec), ModelDeploymentSpec):
        return case
    return resolve(case, current_template_hash(spec, case["modelDeployment"]["metadata"]["name"]))


def snapshot_of(case: dict[str, Any]) -> Snapshot:
    case = resolved(case)
    body = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment", **case["modelDeployment"]}
    body["metadata"] = {"namespace": "shop", "uid": UID, **body["metadata"]}
    read = case.get("read") or {}
    unknown = set(read) - set(SLOTS)
    assert not unknown, f"unknown snapshot slots {unknown}"
    slots = {k: tuple(v) if k in LISTS else v for k, v in read.items()}
    return Snapshot(body=body, cause=case["cause"], keda_served=case.get("keda_served", False),
                    gateway_served=case.get("gateway_served", False),
                    read=frozenset(read), rejected=case.get("rejected"),
                    applied_generation=case.get("applied_generation"), **slots)


def plan_of(case: dict[str, Any]) -> dict[str, Any]:
    snap = snapshot_of(case)
    spec = spec_or_reason(snap.body.get("spec"))
    now = dt.datetime.fromisoformat(case.get("now", DEFAULT_NOW).replace("Z", "+00:00"))
    plan = decide(spec, snap, now)
    summary = plan.summary()
    summary["applied"] = {f"{a.obj['kind']}/{a.obj['metadata']['name']}": key_fields(a.obj) for a in plan.applies
                          if a.obj["kind"] in ("Deployment", "HorizontalPodAutoscaler", "ScaledObject", "HTTPRoute")
                          or a.obj["metadata"]["name"].startswith(f"{snap.name}-analysis-")}
    # What observe reads for this object, first the children, then the lists those show to be needed.
    summary["reads"] = [f"{r.kind}/{r.name or r.selector}" for r in first_reads(snap, spec) + second_reads(snap, spec)]
    return summary


def key_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What decide chose inside the objects it applies: replica counts (None: left to an autoscaler),
    floors, the served build."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "Deployment":
        template = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
        return {"replicas": spec.get("replicas"), "buildHash": template.get("peakserve.io/build-hash")}
    if obj["kind"] == "HTTPRoute":
        return {"backends": [f"{b['name']}={b['weight']}" for b in spec["rules"][0]["backendRefs"]]}
    if obj["kind"] == "Job":  # the analysis Job: whom it compares, with what
        return {"args": spec["template"]["spec"]["containers"][0]["args"]}
    if obj["kind"] == "HorizontalPodAutoscaler":
        return {"minReplicas": spec["minReplicas"], "maxReplicas": spec["maxReplicas"]}
    return {"minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
            "triggers": [trigger["type"] for trigger in spec["triggers"]]}


def contains(actual: Any, expected: Any, path: str = "plan") -> list[str]:
    """Where `expected` is not a deep subset of `actual` (lists match item by item, in order)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, got {actual!r}"]
        return [m for k, v in expected.items()
                for m in (contains(actual[k], v, f"{path}.{k}") if k in actual else [f"{path}.{k}: missing"])]
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [f"{path}: expected at least {len(expected)} items, got {actual!r}"]
        return [m for i, v in enumerate(expected) for m in contains(actual[i], v, f"{path}[{i}]")]
    return [] if actual == expected else [f"{path}: expected {expected!r}, got {actual!r}"]


NAMES = [c["name"] for c in CASES]


def test_the_table_covers_what_decide_must_decide():
    assert {"create", "update", "invalid-spec", "build-pending", "build-failed", "build-passed",
            "autoscaling-hand-over", "schedule-floor", "unschedulable-pods"} <= set(NAMES)
    assert len(NAMES) == len(set(NAMES)), "case names repeat"


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_plan_shows_what_the_case_expects(case):
    mismatches = contains(plan_of(case), resolved(case)["expect"])
    assert not mismatches, f"{case['name']} ({case['why']}):\n" + "\n".join(mismatches)


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_plan_matches_golden(case):
    path = TABLES / "plans" / f"{case['name']}.yaml"
    actual = dump(plan_of(case))
    if UPDATE:  # writing the file proves nothing: the run says so instead of passing
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
        pytest.skip(f"rewrote plans/{path.name}: review the diff")
    assert path.exists(), f"{path} is missing: run `make golden` and review it"
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"plans/{path.name}", "decided"))
        pytest.fail(f"the plan of {case['name']} changed; if intended, run `make golden`:\n{diff}")


def test_every_golden_plan_has_a_case():
    orphans = {p.stem for p in (TABLES / "plans").glob("*.yaml")} - set(NAMES)
    assert not orphans, f"plans without a case (delete them): {sorted(orphans)}"


def _imports(path: Path) -> set[str]:
    """Absolute module names a peakserve source file imports (relative imports resolved)."""
    import ast

    package = ".".join(path.relative_to(SOURCE.parent).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


SOURCE = Path(__file__).resolve().parents[2] / "operator" / "peakserve"


def test_decide_and_render_import_no_client():
    """decide and render are pure: nothing they import, however indirectly, reaches a client or kopf."""
    def file_of(module: str) -> Path | None:
        parts = module.split(".")
        for candidate in (SOURCE.parent.joinpath(*parts).with_suffix(".py"), SOURCE.parent.joinpath(*parts, "__init__.py")):
            if candidate.exists():
                return candidate
        return None

    seen, todo, reached = set(), ["peakserve.decide", "peakserve.render"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = file_of(module)
        if path is None:
            continue
        for imported in _imports(path):
            reached.add(imported)
            if imported.startswith("peakserve"):
                todo.append(imported)
    forbidden = sorted(m for m in reached if m.split(".")[0] in ("kubernetes", "kopf", "urllib3", "requests")
                       or m.startswith(("peakserve.cluster", "peakserve.runtime")))
    assert not forbidden and "peakserve.decide.decision" in seen
