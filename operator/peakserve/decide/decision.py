"""decide(spec, snapshot, now) -> Plan: the whole judgement of one reconcile pass, with no I/O.

What it settles, in order:
1. the autoscaling floor and engine, from the clock (and so whether a promotion freezes changes);
2. the build: the Job to create for the current spec's build hash (not during a freeze), and where it is;
3. whether the serving children converge this pass (a valid spec whose build, if any, passed), and
   then: the rendered children, the rollout of a new pod template (decide/rollout.py: canary beside
   stable, steps, analysis, promotion or rollback), the replica hand-over to an HPA, the dry run of a
   new generation, and the children to prune; while a build holds the rollout, only the scaling;
4. whether the next promotion's floor fits the free GPUs (PromotionReady, decide/promotion.py);
5. status (conditions included), the Events of its transitions, and the next wake-up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ..api.identity import build_hash
from ..api.spec import ModelDeploymentSpec, PromotionReadiness, RolloutStatus
from ..render import ScalingPlan, names, possible_children, render_children, render_scaling
from ..render.route import render_route
from ..render.build_job import artifact_uri, render_build_job
from ..render.owner import Owner
from ..render.service import endpoint
from . import conditions, promotion
from .build_job import BuildState, build_state, record_patch
from .plan import HANDOVER_MANAGER, Apply, Delete, Event, Patch, Plan, status_dict
from .conditions import CHANGE_FREEZE
from .rollout import STABLE, RolloutDecision, decide_rollout, template_hash_of
from .scaling import ScalingDecision, decide_scaling
from .snapshot import CHILD, SPEC, ParsedSpec, Snapshot, never_reconciled, served_uri
from .status import derive_status, merge_patch, same_status

# Children whose content comes from free-form input (affinity, tolerations, quantities). The others are
# built only from schema-checked fields, so the API server's dry run is spent on these alone.
DRY_RUN_KINDS = ("Deployment", "HorizontalPodAutoscaler")


def serving_hash(deployment: dict[str, Any] | None) -> str | None:
    """The build hash the Triton pods run, from the Deployment's pod template."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_BUILD_HASH)


def owns_replicas(deployment: dict[str, Any] | None) -> bool:
    """Whether peakserve's own apply last set the Deployment's replicas."""
    for entry in (deployment or {}).get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == names.MANAGER and entry.get("operation") == "Apply":
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
                return True
    return False


def handover(deployment: dict[str, Any] | None, desired: dict[str, Any]) -> Apply | None:
    """Before peakserve stops applying spec.replicas, park the live value with another manager.

    If the only manager of a field stops applying it, the API server removes the field and the
    Deployment falls back to 1 replica. Parking it keeps the live count until the HPA takes the
    field over (the documented SSA hand-over to an autoscaler).
    """
    if "replicas" in desired["spec"] or not owns_replicas(deployment):
        return None
    meta = deployment["metadata"]
    return Apply({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                  "spec": {"replicas": deployment["spec"].get("replicas", 1)}}, manager=HANDOVER_MANAGER)


def accepted(snap: Snapshot) -> bool:
    """This generation was applied before (a drift check or a resume; or, before its status is written, by this
    process): no need to dry-run it again."""
    if snap.applied_generation == snap.generation:
        return True
    ready = conditions.find(snap.previous_status.get("conditions"), conditions.READY)
    return (snap.previous_status.get("observedGeneration") == snap.generation
            and ready.get("reason") != conditions.INVALID_SPEC)


# When a new object's first status is written, after the pass that creates its Deployment. A new Deployment
# and its pods report 7-8 changes over its first 1-2 s (measured at 200 objects on 2 cores); the first status
# says what they came to, in one write and one pass.
FIRST_STATUS_AFTER = dt.timedelta(seconds=2)


def status_waits(snap: Snapshot, observed: conditions.Observed) -> bool:
    """The first pass of a new object writes no status: it would only say "creating", and what the Deployment
    reports in its first seconds is the news. A pass FIRST_STATUS_AFTER later (the child events of those seconds
    merge into it) writes the first status, with observedGeneration. At 1,000 objects created at once the
    status written at once and again on the first reports were two ModelDeployment writes in three (each about
    4 ms of API server CPU, and sent to every watcher)."""
    return snap.cause == SPEC and never_reconciled(snap) and observed.creating and not observed.invalid


def should_converge(snap: Snapshot, build: BuildState | None) -> bool:
    """Spec, drift and wake-up passes converge everything. A child event converges only when the child's
    change leaves the cluster short of the spec: the Deployment is missing, a build just passed and is
    not served yet, or the current generation was never accepted (not applied yet, or refused by the API
    server: the refusal is checked again rather than forgotten)."""
    if snap.cause != CHILD or snap.deployment is None or not accepted(snap):
        return True
    if snap.canary is not None:  # a rollout in flight moves on its children's changes
        return True
    return build is not None and serving_hash(snap.deployment) != build.hash


def prune(owner: Owner, desired: list[dict[str, Any]], snap: Snapshot) -> list[Delete]:
    """Children this spec no longer wants that exist, were read this pass, and are ours (owner uid)."""
    wanted = {(c["kind"], c["metadata"]["name"]) for c in desired}
    seen = {(obj["kind"], obj["metadata"]["name"]): obj for slot in ("hpa", "scaled_object", "headroom")
            if slot in snap.read and (obj := getattr(snap, slot)) is not None}
    out = []
    for api_version, kind, name in possible_children(owner.name):
        obj = seen.get((kind, name))
        if (kind, name) in wanted or obj is None:
            continue
        if any(ref.get("uid") == owner.uid for ref in obj["metadata"].get("ownerReferences") or []):
            out.append(Delete(api_version, kind, name))
    return out


def _build(owner: Owner, spec: ModelDeploymentSpec, snap: Snapshot,
           freeze: str | None) -> tuple[BuildState, list[Apply], list[Patch]]:
    bhash = build_hash(spec)
    job_name = names.build_job_name(owner.name, bhash)
    state = build_state(bhash, job_name, artifact_uri(spec, bhash), snap.build_job, snap.build_pods)
    creates = [Apply(render_build_job(owner, spec, bhash))] if snap.build_job is None else []
    if creates and freeze and not spec.serving.rollout.force and snap.deployment is not None:
        creates = []   # a new build during a promotion would only lead to a rollout that is frozen anyway
        state.reason = CHANGE_FREEZE
        state.message = f"{freeze}: the build of {bhash} waits until it ends (spec.serving.rollout.force overrides)."
    record = record_patch(state)
    patches = [Patch("batch/v1", "Job", job_name, record)] if record else []
    return state, creates, patches


def _observed(snap: Snapshot, spec: ModelDeploymentSpec | None, owner: Owner, invalid: str | None,
              build: BuildState | None, applies: list[Apply], rollout: RolloutDecision | None) -> conditions.Observed:
    """What the conditions are derived from: the snapshot, and what this pass is about to create."""
    serving = spec.serving if spec else None
    # Our ScaledObject speaks for the autoscaler when the spec's engine resolves to keda (and it is ours).
    autoscaling = spec.autoscaling if spec and not invalid else None
    keda_object = snap.scaled_object if autoscaling is not None and (
        autoscaling.engine == "keda" or (autoscaling.engine == "auto" and snap.keda_served)) else None
    if keda_object is not None and not any(ref.get("uid") == owner.uid for ref in
                                           (keda_object.get("metadata") or {}).get("ownerReferences") or []):
        keda_object = None
    return conditions.Observed(
        generation=snap.generation, deployment=snap.deployment,
        hpa=snap.hpa if spec and spec.autoscaling and not invalid else None, pods=list(snap.pods), invalid=invalid,
        gpu_resource=serving.gpu_resource if serving else "nvidia.com/gpu", gpus=serving.gpus if serving else 1,
        gpu_product=serving.gpu_product if serving else None, endpoint=endpoint(owner)["http"],
        build=status_dict(build.status(serving_hash(snap.deployment))) if build else None,
        creating=snap.deployment is None and any(a.obj["kind"] == "Deployment" for a in applies),
        rollout=status_dict(rollout.status) if rollout else snap.previous_status.get("rollout"),
        scaled_object=keda_object)


def _deployment_first(applies: list[Apply]) -> list[Apply]:
    """The first Deployment of a spec, applied before the other children instead of dry-run. Nothing serves yet,
    so a dry run would protect nothing: a refusal of the real apply leaves no child behind either, and a new
    object costs the API server one Deployment apply instead of two (7-8 ms each on an idle one)."""
    first = [a for a in applies if a.obj["kind"] == "Deployment"]
    return first + [a for a in applies if a.obj["kind"] != "Deployment"]


def _first_rollout(snap: Snapshot, spec: ModelDeploymentSpec | None) -> RolloutStatus | None:
    """What a pass that only reports says of the rollout when no status has said anything yet (the first
    pass left its status to a later one, `status_waits`): the Deployment it created is the stable side."""
    if spec is None or snap.deployment is None or snap.previous_status.get("rollout"):
        return None
    return RolloutStatus(phase=STABLE, stable_hash=template_hash_of(snap.deployment))


def _freeze(scaling: ScalingDecision | None) -> str | None:
    """Why changes are frozen now: a promotion window (lead time included) is active. Scaling never is."""
    active = scaling.status.active_schedule if scaling else None
    return f"Change freeze: promotion {active} is active" if active else None


def _serving(owner: Owner, spec: ModelDeploymentSpec, snap: Snapshot, build: BuildState | None,
             scaling: ScalingDecision | None, now: dt.datetime) -> tuple[list[dict[str, Any]], list[Apply], RolloutDecision]:
    """The rendered children, what of them (and of the rollout) is applied, and the rollout decision."""
    children = render_children(owner, spec, build.hash if build else None, scaling.plan if scaling else ScalingPlan())
    deployment = next(c for c in children if c["kind"] == "Deployment")
    served = artifact_uri(spec, build.hash) if build else served_uri(spec)
    rollout = decide_rollout(spec, owner, snap, template_hash_of(deployment), build.hash if build else None,
                             served, now, _freeze(scaling))
    applied = children
    parked = None
    if rollout.hold_stable:  # the stable pods keep their template (and their config) while a canary decides
        held = {("Deployment", names.child_name(owner.name)), ("ConfigMap", names.config_map_name(owner.name))}
        applied = [c for c in children if (c["kind"], c["metadata"]["name"]) not in held]
    else:
        parked = handover(snap.deployment, deployment)
    if snap.gateway_served:
        applied = applied + render_route(owner, spec, rollout.route_weight)
    applies = ([parked] if parked else []) + [Apply(c) for c in applied] + [Apply(c) for c in rollout.applies]
    return children, applies, rollout


def decide(spec: ParsedSpec, snap: Snapshot, now: dt.datetime) -> Plan:
    owner = Owner.of(snap.body)
    valid = spec if isinstance(spec, ModelDeploymentSpec) else None
    invalid = None if valid else str(spec)
    if valid and snap.rejected:
        invalid = f"the API server rejected the rendered children: {snap.rejected}"
    applies: list[Apply] = []
    patches: list[Patch] = []
    build = None
    scaling: ScalingDecision | None = None
    if valid and valid.autoscaling is not None:
        pods = snap.pods if "pods" in snap.read else None
        scaling = decide_scaling(valid.autoscaling, snap.keda_served, pods, snap.previous_status, now, snap.metrics)
    if valid and valid.build is not None:
        build, creates, patches = _build(owner, valid, snap, _freeze(scaling))
        if not snap.rejected:  # the build Job may be what the API server refused: then nothing is created
            applies += creates
    dry_run: list[dict[str, Any]] = []
    deletions: list[Delete] = []
    rollout: RolloutDecision | None = None
    # A spec with a build rolls out only once its build passed; until then the current pods keep serving.
    if valid and not snap.rejected and (build is None or build.passed) and should_converge(snap, build):
        children, serving_applies, rollout = _serving(owner, valid, snap, build, scaling, now)
        applies += serving_applies
        patches += rollout.patches
        if not accepted(snap):
            dry_run = [c for c in children if c["kind"] in DRY_RUN_KINDS]
            if snap.deployment is None and [c["kind"] for c in dry_run] == ["Deployment"]:
                applies, dry_run = _deployment_first(applies), []
        deletions = prune(owner, children, snap) + list(rollout.deletions)
    elif valid and scaling is not None and build is not None and not build.passed and snap.deployment is not None \
            and not snap.rejected:
        # A build that has not passed (or is frozen) holds the rollout, never the scaling: the floor of a
        # promotion moves the pods that serve now.
        applies += [Apply(c) for c in render_scaling(owner, valid, scaling.plan)]
    promo = _promotion(valid, snap, scaling, now) if valid and not invalid and scaling else None
    if promo is not None and promo.free is not None:
        scaling = dataclasses.replace(scaling, status=scaling.status.model_copy(update={"promotion": PromotionReadiness(
            schedule=promo.schedule, needed_gpus=promo.needed, free_gpus=promo.free)}))
    observed = _observed(snap, valid, owner, invalid, build, applies, rollout)
    observed.promotion = (promo.status, promo.reason, promo.message) if promo else None
    status = derive_status(observed, owner, valid, build, scaling, serving_hash(snap.deployment),
                           snap.previous_status, now, rollout.status if rollout else _first_rollout(snap, valid))
    wakes = [w for w in (scaling.next_change if scaling else None, scaling.wake_at if scaling else None,
                         rollout.wake_at if rollout else None,
                         promo.wake_at if promo else None) if w]
    write = ({"status_at": now + FIRST_STATUS_AFTER} if status_waits(snap, observed)
             else _status_write(snap.previous_status, status_dict(status)))
    return Plan(status=status, dry_run=tuple(dry_run), applies=tuple(applies), patches=tuple(patches),
                deletions=tuple(deletions), invalid=invalid, wake_at=min(wakes) if wakes else None, **write)


def _promotion(spec: ModelDeploymentSpec, snap: Snapshot, scaling: ScalingDecision,
               now: dt.datetime) -> promotion.Check | None:
    """PromotionReady from the nodes and pods read this pass (decide/promotion.py)."""
    nodes = snap.nodes if "nodes" in snap.read else None
    pods = snap.node_pods if "node_pods" in snap.read else None
    return promotion.check(spec, scaling.plan.lead_seconds, now, snap.namespace, snap.name, nodes, pods)


def _status_write(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The status patch (None when nothing but timestamps would change) and the Events of its transitions."""
    if same_status(previous, current):
        return {"status_patch": None, "events": ()}
    events = tuple(Event(conditions.event_type(c), c["reason"], f"{c['type']}={c['status']}: {c['message']}")
                   for c in conditions.transitions(previous.get("conditions") or [], current["conditions"]))
    return {"status_patch": merge_patch(previous, current), "events": events}
