"""Status conditions derived from what the cluster shows: pure functions, no I/O.

Condition types and reasons are named here and nowhere else (API conventions:
types are adjectives, reasons one CamelCase word, messages for people).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
BUILD_SUCCEEDED = "BuildSucceeded"
PROMOTION_READY = "PromotionReady"  # decide/promotion.py: the next promotion's floor fits the free GPUs

# Reasons
SERVING = "Serving"
INVALID_SPEC = "InvalidSpec"
INSUFFICIENT_GPU = "InsufficientGPU"
GPU_PRODUCT_UNAVAILABLE = "GPUProductUnavailable"
INSUFFICIENT_RESOURCES = "InsufficientResources"
MODEL_STORAGE_UNAVAILABLE = "ModelStorageUnavailable"
UNSCHEDULABLE = "Unschedulable"
LOADING = "ReplicasNotReady"
SCALED_TO_ZERO = "ScaledToZero"
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
REPLICA_FAILURE = "ReplicaFailure"
AUTOSCALER_FAILING = "AutoscalerFailing"
AS_EXPECTED = "AsExpected"
BUILDING = "Building"
BUILD_FAILED = "BuildFailed"
CANARY_STEP = "CanaryStep"
ROLLED_BACK = "RolledBack"
CHANGE_FREEZE = "ChangeFreeze"
CLAIM_NOT_FOUND = "ClaimNotFound"


@dataclass
class Observed:
    """What the operator saw of one ModelDeployment's children."""

    generation: int
    deployment: dict[str, Any] | None = None
    hpa: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    invalid: str | None = None          # why the current spec was refused, if it was
    gpu_resource: str = "nvidia.com/gpu"
    gpus: int = 1
    gpu_product: str | None = None
    endpoint: str = ""
    build: dict[str, Any] | None = None  # status.build of the current spec's build, when spec.build is set
    creating: bool = False               # this pass creates the Deployment (it did not exist when read)
    rollout: dict[str, Any] | None = None  # status.rollout of this pass
    scaled_object: dict[str, Any] | None = None  # our KEDA ScaledObject, when the engine resolves to keda
    promotion: tuple[str, str, str] | None = None  # PromotionReady (status, reason, message), when checked


def find(conditions: list[dict[str, Any]] | None, ctype: str) -> dict[str, Any]:
    """The condition of that type in a conditions list, or {}."""
    return next((c for c in conditions or [] if c.get("type") == ctype), {})


def _cond(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The condition of that type in an object's status, or None."""
    return find(((obj or {}).get("status") or {}).get("conditions"), ctype) or None


def _unschedulable_messages(pods: list[dict[str, Any]]) -> list[str]:
    out = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        c = _cond(pod, "PodScheduled")
        if c and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            out.append(c.get("message", ""))
    return out


def explain_unschedulable(message: str, count: int, obs: Observed) -> tuple[str, str]:
    """Turn the scheduler's FailedScheduling text into a reason and advice a user can act on."""
    pods = f"{count} pod(s) cannot be scheduled"
    product = obs.gpu_product or "any GPU product"
    first = re.split(r"\. preemption:", message)[0].strip()
    if f"Insufficient {obs.gpu_resource}" in message:
        return INSUFFICIENT_GPU, (
            f"{pods}: no node with {product} has {obs.gpus} free {obs.gpu_resource}. "
            f"Free GPUs, lower serving.gpus, or add GPU nodes. Scheduler: {first}")
    if obs.gpu_product and "didn't match Pod's node affinity/selector" in message:
        return GPU_PRODUCT_UNAVAILABLE, (
            f"{pods}: no schedulable node is labelled nvidia.com/gpu.product={obs.gpu_product}. "
            f"Check serving.gpuProduct against `kubectl get nodes -L nvidia.com/gpu.product`. Scheduler: {first}")
    if "persistentvolumeclaim" in message.lower():
        return MODEL_STORAGE_UNAVAILABLE, (
            f"{pods}: the PersistentVolumeClaim named in spec.model.uri is missing or unbound. "
            f"Create it in this namespace. Scheduler: {first}")
    if "Insufficient cpu" in message or "Insufficient memory" in message:
        return INSUFFICIENT_RESOURCES, (
            f"{pods}: not enough free CPU or memory on the GPU nodes for serving.resources.requests. "
            f"Scheduler: {first}")
    return UNSCHEDULABLE, f"{pods}. Scheduler: {first}"


def _build_phase(obs: Observed) -> str | None:
    return (obs.build or {}).get("phase")


def _build_held(obs: Observed) -> bool:
    """The current spec waits for its build (running or failed): nothing new rolls out."""
    return obs.build is not None and _build_phase(obs) != "Succeeded"


def _build_failure(obs: Observed) -> tuple[str, str]:
    build = obs.build or {}
    return build.get("reason") or BUILD_FAILED, build.get("message") or f"Build Job {build.get('job')} failed."


def _build_condition(obs: Observed) -> tuple[str, str, str]:
    build = obs.build or {}
    phase = build.get("phase")
    if phase == "Succeeded":
        return "True", build.get("reason") or "GatesPassed", build.get("message") or "The build passed its gates."
    if phase == "Failed":
        reason, message = _build_failure(obs)
        kept = " The previous version keeps serving." if obs.deployment else ""
        return "False", reason, message + kept
    return "Unknown", BUILDING, f"Building model {build.get('hash')} in Job {build.get('job')}."


def _desired(obs: Observed) -> int:
    return int(((obs.deployment or {}).get("spec") or {}).get("replicas") or 0)


def _ready_condition(obs: Observed) -> tuple[str, str, str]:
    status = (obs.deployment or {}).get("status") or {}
    desired, ready = _desired(obs), int(status.get("readyReplicas") or 0)
    if obs.invalid:
        serving = f" The previous spec keeps serving ({ready}/{desired} ready)." if obs.deployment else ""
        return "False", INVALID_SPEC, obs.invalid + serving
    if obs.deployment is None and _build_held(obs):
        if _build_phase(obs) == "Failed":
            reason, message = _build_failure(obs)
            return "False", reason, message
        return "False", BUILDING, "Waiting for the model build to pass its gates before the first rollout."
    if obs.deployment is None and obs.creating:
        return "False", LOADING, "Creating the Triton Deployment; no replica is ready yet."
    if obs.deployment is None:
        return "Unknown", LOADING, "Waiting for the Triton Deployment to be created."
    if desired == 0:
        return "False", SCALED_TO_ZERO, "Replicas is 0: nothing is serving."
    available = _cond(obs.deployment, "Available")
    if ready > 0 and available and available.get("status") == "True":
        return "True", SERVING, f"{ready}/{desired} replicas ready; serving at {obs.endpoint}"
    stuck = _unschedulable_messages(obs.pods)
    if stuck:
        reason, message = explain_unschedulable(stuck[0], len(stuck), obs)
        return "False", reason, message
    return "False", LOADING, f"{ready}/{desired} replicas ready; waiting for Triton to load the model."


def _rollout_phase(obs: Observed) -> str | None:
    return (obs.rollout or {}).get("phase")


def _progressing_condition(obs: Observed) -> tuple[str, str, str]:
    if obs.invalid:
        return "False", INVALID_SPEC, "Rollout held until the spec is fixed."
    rollout = obs.rollout or {}
    if (obs.build or {}).get("reason") == CHANGE_FREEZE and _build_phase(obs) != "Succeeded":
        return "False", CHANGE_FREEZE, obs.build.get("message") or "Change freeze."
    if _rollout_phase(obs) == "Held":
        return "False", rollout.get("reason") or "RolloutHeld", rollout.get("message") or ""
    if _rollout_phase(obs) == "RolledBack":
        return "False", ROLLED_BACK, rollout.get("message") or ""
    if _rollout_phase(obs) == "Canary":
        return "True", CANARY_STEP, rollout.get("message") or ""
    if _build_held(obs):
        if _build_phase(obs) == "Failed":
            return "False", BUILD_FAILED, "Rollout held: the build of this spec failed; fix the spec or its model."
        return "True", BUILDING, "Building the model; the rollout starts once the build passes its gates."
    dep = obs.deployment
    if dep is None:
        return "True", ROLLING_OUT, "Creating the Triton Deployment."
    progressing = _cond(dep, "Progressing")
    if progressing and progressing.get("reason") == PROGRESS_DEADLINE:
        return "False", PROGRESS_DEADLINE, progressing.get("message", "")
    status = dep.get("status") or {}
    desired = _desired(obs)
    updated = int(status.get("updatedReplicas") or 0)
    current = (status.get("observedGeneration") or 0) >= (dep["metadata"].get("generation") or 0)
    settled = (current and updated >= desired and int(status.get("replicas") or 0) == desired
               and int(status.get("availableReplicas") or 0) >= desired)
    if _rollout_phase(obs) == "Promoting":
        # The stable side takes the canary's template. The pass that starts it reads the Deployment from before
        # its own apply (settled on the old template): "complete" there would be false, and an Event of it.
        template = ((dep.get("metadata") or {}).get("annotations") or {}).get("peakserve.io/template-hash")
        taken = current and template == rollout.get("canaryHash")
        return "True", ROLLING_OUT, (f"Promoting the canary: {updated if taken else 0}/{desired} stable replicas "
                                     f"updated, {int(status.get('availableReplicas') or 0)} available.")
    if settled:
        return "False", ROLLOUT_COMPLETE, f"All {desired} replicas run the current spec."
    return "True", ROLLING_OUT, f"{updated}/{desired} replicas updated, {int(status.get('availableReplicas') or 0)} available."


def _degraded_condition(obs: Observed) -> tuple[str, str, str]:
    dep = obs.deployment
    rollout = obs.rollout or {}
    if _rollout_phase(obs) == "RolledBack":
        return "True", ROLLED_BACK, rollout.get("message") or ""
    if _rollout_phase(obs) == "Held" and rollout.get("reason") == CLAIM_NOT_FOUND:
        return "True", CLAIM_NOT_FOUND, rollout.get("message") or ""
    if dep is not None and _build_phase(obs) == "Failed":
        reason, message = _build_failure(obs)
        return "True", reason, f"The build of the current spec failed: {message} The previous version keeps serving."
    failure = _cond(dep, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return "True", REPLICA_FAILURE, failure.get("message", "")
    progressing = _cond(dep, "Progressing")
    if progressing and progressing.get("reason") == PROGRESS_DEADLINE:
        return "True", PROGRESS_DEADLINE, progressing.get("message", "")
    ready = int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)
    stuck = _unschedulable_messages(obs.pods)
    if ready > 0 and stuck:
        reason, message = explain_unschedulable(stuck[0], len(stuck), obs)
        return "True", reason, message
    active = _cond(obs.hpa, "ScalingActive")
    if obs.hpa is not None and active and active.get("status") == "False":
        return "True", AUTOSCALER_FAILING, (
            f"The autoscaler cannot act: {active.get('message', '')}. "
            "Is the Triton metrics adapter installed? (README: Autoscaling)")
    # KEDA's ScaledObject, when KEDA scales this spec: its own conditions, in KEDA's words. KEDA documents
    # Ready (False: the ScaledObject or its triggers fail; Unknown with PartialTriggerError: some triggers fail
    # while others are active; Unknown otherwise: not checked yet), Active (False is idle, not a failure),
    # Fallback (True: a trigger fails and the fallback replicas are in force), HPAActive (its HPA's
    # ScalingActive mirrored; False: the HPA cannot fetch KEDA's metrics); Paused is deliberate.
    keda = ((obs.scaled_object or {}).get("status") or {}).get("conditions") or []
    keda_ready, fallback, hpa_active = (find(keda, t) for t in ("Ready", "Fallback", "HPAActive"))
    failing = [c for c, failed in (
        (keda_ready, keda_ready.get("status") == "False"
         or (keda_ready.get("status") == "Unknown" and keda_ready.get("reason") == "PartialTriggerError")),
        (fallback, fallback.get("status") == "True"),
        (hpa_active, hpa_active.get("status") == "False")) if failed]
    if failing:
        said = "; ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason') or 'NoReason'})"
                         + (f": {c['message']}" if c.get("message") else "") for c in failing)
        name = ((obs.scaled_object or {}).get("metadata") or {}).get("name", "")
        return "True", AUTOSCALER_FAILING, (
            f"KEDA cannot scale with ScaledObject {name}: {said}. "
            "Check the triggers' prometheusAddress and KEDA's operator log (README: Autoscaling)")
    return "False", AS_EXPECTED, "No problems observed."


def derive_conditions(obs: Observed, previous: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """Ready, Progressing, Degraded; BuildSucceeded with a build, PromotionReady with promotion schedules.
    lastTransitionTime moves only when status changes."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    checks = [(READY, _ready_condition), (PROGRESSING, _progressing_condition), (DEGRADED, _degraded_condition)]
    if obs.build is not None:
        checks.append((BUILD_SUCCEEDED, _build_condition))
    if obs.promotion is not None:
        checks.append((PROMOTION_READY, lambda o: o.promotion))
    for ctype, fn in checks:
        status, reason, message = fn(obs)
        old = before.get(ctype)
        changed = old is None or old.get("status") != status
        out.append({
            "type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
            "observedGeneration": obs.generation,
        })
    return out


def transitions(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions worth an Event: a changed status or reason, or a first appearance that is a warning or
    Ready=True.

    A new object's first conditions are not news when every new object starts with them: healthy ones
    (not degraded, rolling out), and Ready=False while its first replicas start (like a Deployment's, whose
    controller reports nothing either). Nor is a rollout's completion in the pass that turns Ready True: the
    Ready Event says it (a new object's first rollout, or the one that brought replicas back). These would only
    add API writes when hundreds of ModelDeployments are created at the start of a promotion. What holds the
    replicas back later (a scheduling reason, the progress deadline) changes a reason, and that is an Event; so
    is a rollout that completes while Ready stays True.
    """
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous or []}
    changed = [c for c in current
               if before.get(c["type"]) != (c["status"], c["reason"])
               and (c["type"] in before or _serving(c) or (event_type(c) == "Warning" and not _starting(c)))]
    if any(_serving(c) for c in changed):  # the rollout is what made it ready
        changed = [c for c in changed if (c["type"], c["reason"]) != (PROGRESSING, ROLLOUT_COMPLETE)]
    return changed


def _serving(condition: dict[str, Any]) -> bool:
    """Ready=True is news even as a first condition: the first status of a new object can already say it
    serves (it is written once its Deployment has reported, decide.status_waits)."""
    return condition["type"] == READY and condition["status"] == "True"


def _starting(condition: dict[str, Any]) -> bool:
    return condition["type"] == READY and condition["reason"] == LOADING


def event_type(condition: dict[str, Any]) -> str:
    good = (condition["type"] == DEGRADED) == (condition["status"] == "False")
    if condition["type"] == READY and condition["reason"] == BUILDING:
        good = True  # waiting for a build is the normal first step, not a problem
    if condition["type"] == PROGRESSING:
        good = condition["reason"] not in (PROGRESS_DEADLINE, INVALID_SPEC, BUILD_FAILED, ROLLED_BACK, CLAIM_NOT_FOUND)
    if condition["type"] == BUILD_SUCCEEDED:
        good = condition["status"] != "False"
    return "Normal" if good else "Warning"
