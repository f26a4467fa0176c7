"""One converging reconcile: desired children in, cluster converged, status derived from what is seen.

Create, update, resume and the drift loop all call `reconcile`. Events on the children
call `refresh_status`, which observes and reports without writing any child.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Callable

from . import conditions
from .builds import BuildState, ensure_build
from .kube import ApiException, Kube, error_message, rfc3339
from .render import ScalingPlan, names, possible_children, render_children
from .scaling import plan_scaling
from .render.owner import Owner
from .render.service import endpoint
from .validation import InvalidSpec, parse_spec

log = logging.getLogger("peakserve.reconcile")

HANDOVER_MANAGER = "peakserve-handover-to-hpa"

# (body of the ModelDeployment, event type, reason, message) -> None
EventSink = Callable[[dict[str, Any], str, str, str], None]


@dataclass
class Outcome:
    status: dict[str, Any]
    invalid: bool = False
    requeue_at: datetime.datetime | None = None  # a promotion floor changes then: reconcile again


def _owns_replicas(deployment: dict[str, Any]) -> bool:
    for entry in deployment["metadata"].get("managedFields") or []:
        if entry.get("manager") == names.MANAGER and entry.get("operation") == "Apply":
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
                return True
    return False


def hand_replicas_to_hpa(kube: Kube, deployment: dict[str, Any] | None) -> None:
    """Before peakserve stops applying spec.replicas, park the live value with another manager.

    If the only manager of a field stops applying it, the API server removes the field and
    the Deployment falls back to 1 replica. Parking it keeps the live count until the HPA
    takes the field over (the documented SSA hand-over to an autoscaler).
    """
    if deployment is None or not _owns_replicas(deployment):
        return
    meta = deployment["metadata"]
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": deployment["spec"].get("replicas", 1)}}, manager=HANDOVER_MANAGER)


# Children whose content comes from free-form input (affinity, tolerations, quantities). The others
# are built only from schema-checked fields, so the API server's dry run is spent on these alone.
DRY_RUN_KINDS = ("Deployment", "HorizontalPodAutoscaler")


def converge(kube: Kube, owner: Owner, children: list[dict[str, Any]], *, validate: bool) -> dict[str, Any]:
    """Dry-run (for a spec not yet accepted), apply everything, remove children no longer wanted.

    Returns the applied objects by kind: the API server's answers, so nobody has to read them again.
    """
    if validate:  # the API server's own validation, before anything changes
        for child in children:
            if child["kind"] in DRY_RUN_KINDS:
                kube.apply(child, dry_run=True)
    deployment = next(c for c in children if c["kind"] == "Deployment")
    if "replicas" not in deployment["spec"]:
        hand_replicas_to_hpa(kube, kube.get("apps/v1", "Deployment", owner.namespace, names.child_name(owner.name)))
    applied = {(child["kind"], child["metadata"]["name"]): kube.apply(child) for child in children}
    for api_version, kind, name in possible_children(owner.name):
        if (kind, name) in applied:
            continue
        stale = kube.get(api_version, kind, owner.namespace, name)
        if stale and any(ref.get("uid") == owner.uid for ref in stale["metadata"].get("ownerReferences") or []):
            kube.delete(api_version, kind, owner.namespace, name)
    return applied


def _serving_hash(deployment: dict[str, Any] | None) -> str | None:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_BUILD_HASH)


def observe(kube: Kube, owner: Owner, generation: int, spec_raw: dict[str, Any] | None,
            invalid: str | None = None, known: dict[str, Any] | None = None,
            build: BuildState | None = None) -> conditions.Observed:
    """Read the children back; `known` holds objects the caller already has fresh from the API server."""
    known = known or {}
    child = names.child_name(owner.name)
    deployment = known.get(("Deployment", child)) or kube.get("apps/v1", "Deployment", owner.namespace, child)
    serving = (spec_raw or {}).get("serving") or {}
    hpa = None
    if (spec_raw or {}).get("autoscaling") and not invalid:
        hpa = known.get(("HorizontalPodAutoscaler", child)) or kube.get(
            "autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, child)
    pods: list[dict[str, Any]] = []
    dep_status = (deployment or {}).get("status") or {}
    desired = ((deployment or {}).get("spec") or {}).get("replicas") or 0
    # Pods are listed only when some exist and not all are ready: that is when scheduling matters.
    if (dep_status.get("replicas") or 0) > 0 and (dep_status.get("readyReplicas") or 0) < desired:
        pods = kube.list("v1", "Pod", owner.namespace, names.pod_selector(owner.name))
    return conditions.Observed(
        generation=generation, deployment=deployment, hpa=hpa, pods=pods, invalid=invalid,
        gpu_resource=serving.get("gpuResource", "nvidia.com/gpu"), gpus=int(serving.get("gpus", 1)),
        gpu_product=serving.get("gpuProduct"), endpoint=endpoint(owner)["http"],
        build=build.status(_serving_hash(deployment)) if build else None)


def status_from(obs: conditions.Observed, owner: Owner, previous: dict[str, Any],
                spec_raw: dict[str, Any] | None = None) -> dict[str, Any]:
    dep_status = (obs.deployment or {}).get("status") or {}
    status = {
        "observedGeneration": obs.generation,
        "conditions": conditions.derive_conditions(obs, previous.get("conditions") or [], rfc3339()),
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": int(dep_status.get("readyReplicas") or 0),
        "updatedReplicas": int(dep_status.get("updatedReplicas") or 0),
        "endpoint": endpoint(owner),
    }
    if obs.build is not None:
        status["build"] = obs.build
    elif previous.get("build") and obs.invalid:
        status["build"] = previous["build"]  # an invalid spec says nothing new about the last build
    precision = _served_precision(obs, spec_raw, previous)
    if precision:
        status["precision"] = precision
    return status


def _served_precision(obs: conditions.Observed, spec_raw: dict[str, Any] | None,
                      previous: dict[str, Any]) -> str | None:
    """What the pods serve: the passed build's choice (kept while a newer build runs or fails),
    or the precision the spec declares for a ready-made model."""
    if not (spec_raw or {}).get("build"):
        return ((spec_raw or {}).get("model") or {}).get("precision", "fp32")
    if obs.build and obs.build.get("phase") == "Succeeded" and obs.build.get("servingHash") == obs.build.get("hash"):
        return obs.build.get("precision")
    return previous.get("precision")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda s: {**s, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                           for c in s.get("conditions") or []]}
    return strip(a) == strip(b)


def merge_patch(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from previous to current: fields that went away are sent as null, because
    a merge patch leaves absent fields as they were (a stale activeSchedule would stay forever)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in current}
    for key, value in current.items():
        old = previous.get(key)
        patch[key] = merge_patch(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return patch


def write_status(kube: Kube, body: dict[str, Any], status: dict[str, Any], emit: EventSink) -> bool:
    """Patch status if it changed; emit one Event per condition transition. Returns whether it wrote."""
    previous = body.get("status") or {}
    if _same(previous, status):
        return False
    meta = body["metadata"]
    kube.patch_status(meta["namespace"], meta["name"], merge_patch(previous, status))
    for cond in conditions.transitions(previous.get("conditions") or [], status["conditions"]):
        text = f"{cond['type']}={cond['status']}: {cond['message']}"
        log.info("%s/%s %s (%s)", meta["namespace"], meta["name"], text, cond["reason"])
        emit(body, conditions.event_type(cond), cond["reason"], text)
    return True


def _accepted(body: dict[str, Any], generation: int) -> bool:
    """This generation was applied before (a drift check or a resume): no need to dry-run it again."""
    status = body.get("status") or {}
    ready = conditions.find(status.get("conditions"), conditions.READY)
    return status.get("observedGeneration") == generation and ready.get("reason") != conditions.INVALID_SPEC


def reconcile(kube: Kube, body: dict[str, Any], emit: EventSink) -> Outcome:
    owner = Owner.of(body)
    generation = int(body["metadata"].get("generation") or 0)
    invalid, applied, build, scaling = None, None, None, None
    try:
        spec = parse_spec(body.get("spec"))
        if spec.build is not None:
            build = ensure_build(kube, owner, spec)
        scaling = plan_scaling(kube, owner, spec, body.get("status") or {})
        # A spec with a build rolls out only once its build passed; until then the current pods keep serving.
        if build is None or build.passed:
            children = render_children(owner, spec, build.hash if build else None, scaling.plan if scaling else ScalingPlan())
            applied = converge(kube, owner, children, validate=not _accepted(body, generation))
    except InvalidSpec as err:
        invalid = str(err)
    except ApiException as err:
        if err.status not in (400, 422):
            raise
        # The API server refused a child (dry run): the spec asks for something it cannot be.
        invalid = f"the API server rejected the rendered children: {error_message(err)}"
    previous_status = body.get("status") or {}
    obs = observe(kube, owner, generation, body.get("spec"), invalid, known=applied, build=build)
    status = status_from(obs, owner, previous_status, body.get("spec"))
    if scaling is not None:
        status["autoscaling"] = scaling.status
    elif previous_status.get("autoscaling") and invalid:
        status["autoscaling"] = previous_status["autoscaling"]
    write_status(kube, body, status, emit)
    return Outcome(status=status, invalid=invalid is not None, requeue_at=scaling.next_change if scaling else None)


def refresh_status(kube: Kube, body: dict[str, Any], emit: EventSink) -> dict[str, Any]:
    """Observe and report only: a child changed, the spec did not."""
    generation = int(body["metadata"].get("generation") or 0)
    previous = body.get("status") or {}
    ready = conditions.find(previous.get("conditions"), conditions.READY)
    if ready.get("reason") == conditions.INVALID_SPEC and ready.get("observedGeneration") == generation:
        return reconcile(kube, body, emit).status  # re-check the verdict; it writes nothing if still invalid
    if (body.get("spec") or {}).get("build"):
        # A finished build Job is what releases the rollout, so a build's children converge, not just report.
        return reconcile(kube, body, emit).status
    owner = Owner.of(body)
    status = status_from(observe(kube, owner, generation, body.get("spec")), owner, previous, body.get("spec"))
    if previous.get("autoscaling"):
        status["autoscaling"] = previous["autoscaling"]  # the floor changes with the clock, not with children
    write_status(kube, body, status, emit)
    return status


def owner_name(child: dict[str, Any]) -> str | None:
    """The ModelDeployment a child or pod belongs to, from the annotation peakserve puts on it."""
    annotations = child.get("metadata", {}).get("annotations") or {}
    return annotations.get(names.ANNOTATION_MD)


