"""A new pod template, rolled out without lowering ready capacity. Pure: snapshot in, decision out.

Every new template starts as a canary Deployment beside the stable one, behind the same Service. The
stable pods are not touched until the canary is Ready and, with steps, has passed its analysis at each
step; only then does the stable Deployment take the template (promotion), while the canary's pods keep
covering for the stable pod being replaced. The canary is removed when the stable side is done. A canary
that is not Ready within the progress deadline, fails an analysis, or is aborted, is removed while stable
serves on (rolled back), and that verdict holds for the template until the spec changes.

State that must survive an operator restart lives in the cluster: the template hash on each Deployment,
and status.rollout (step, its start, the verdicts), which is memory in the sense of decide/status.py.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from ..api.spec import AnalysisResult, ModelDeploymentSpec, RolloutStatus
from ..api.timestamps import parse_rfc3339, rfc3339
from ..render import names, render_canary_children
from ..render.analysis_job import ANNOTATION_ANALYSIS_RESULT, AnalysisTarget, probe_uri, render_analysis_job
from ..render.deployment import claim_of, progress_deadline
from ..render.owner import Owner
from .build_job import finished, recorded_result, result_from_pods, result_patch
from .conditions import CANARY_STEP, CHANGE_FREEZE, CLAIM_NOT_FOUND
from .plan import Delete, Patch
from .snapshot import Snapshot

STABLE, HELD, CANARY, PROMOTING, ROLLED_BACK = "Stable", "Held", "Canary", "Promoting", "RolledBack"
# status.rollout.reason: the conditions surface it (see conditions.py for the condition reasons)
ABORTED, CANARY_NOT_READY, ANALYSIS_ERROR, CHECKING = "Aborted", "CanaryNotReady", "AnalysisError", "Checking"
MAX_IPS = 8  # pods of each side named to the analysis Job; the probe goes to one of each


@dataclass(frozen=True)
class RolloutDecision:
    status: RolloutStatus
    hold_stable: bool = False                 # keep the stable ConfigMap and Deployment as they are
    applies: tuple[dict[str, Any], ...] = ()  # the canary's children, an analysis Job
    patches: tuple[Patch, ...] = ()           # an analysis result recorded on its Job
    deletions: tuple[Delete, ...] = ()        # the canary, once promoted or rolled back
    wake_at: dt.datetime | None = None
    route_weight: int = 0                     # the canary's weight in the HTTPRoute now, percent


def template_hash_of(deployment: dict[str, Any] | None) -> str | None:
    return (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_HASH)


def canary_replicas(weight: int | None, stable: int) -> int:
    """Canary pods for a step's weight: the split is by pod count, rounded up to whole pods."""
    if weight is None:
        return 1
    return max(1, math.ceil(stable * weight / (100 - weight)))


def share(canary: int, stable: int) -> int:
    return round(100 * canary / (canary + stable)) if canary + stable else 0


def promoted(deployment: dict[str, Any]) -> bool:
    """The stable Deployment runs its template on every replica, all available."""
    status, desired = deployment.get("status") or {}, int((deployment.get("spec") or {}).get("replicas") or 0)
    current = (status.get("observedGeneration") or 0) >= (deployment["metadata"].get("generation") or 0)
    return (current and int(status.get("updatedReplicas") or 0) >= desired
            and int(status.get("replicas") or 0) == desired and int(status.get("availableReplicas") or 0) >= desired)


def _ready(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _track(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(names.LABEL_TRACK) or names.STABLE


def _ips(pods: Sequence[dict[str, Any]], track: str) -> tuple[str, ...]:
    ips = sorted((p.get("status") or {}).get("podIP") for p in pods
                 if _track(p) == track and _is_ready(p) and (p.get("status") or {}).get("podIP")
                 and not p["metadata"].get("deletionTimestamp"))
    return tuple(ips[:MAX_IPS])


def _why_not_ready(pods: Sequence[dict[str, Any]]) -> str:
    """The first canary pod's own explanation: the scheduler's, or its container's."""
    for pod in pods:
        if _track(pod) != names.CANARY or _is_ready(pod):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"pod {pod['metadata']['name']} is not scheduled: {cond.get('message', '')}"
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            waiting = state.get("waiting") or (cs.get("lastState") or {}).get("terminated")
            if waiting and (waiting.get("reason") or waiting.get("message")):
                return f"pod {pod['metadata']['name']}: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
        return f"pod {pod['metadata']['name']} is not Ready"
    return "no canary pod is Ready"


def _at(text: str | None) -> dt.datetime | None:
    return parse_rfc3339(text) if text else None


class _Rollout:
    """One pass over one ModelDeployment's rollout; the methods are its branches."""

    def __init__(self, spec: ModelDeploymentSpec, owner: Owner, snap: Snapshot, desired_hash: str,
                 build_hash: str | None, served_uri: str, now: dt.datetime, freeze: str | None):
        self.spec, self.owner, self.snap, self.now = spec, owner, snap, now
        self.rollout = spec.serving.rollout
        self.hash, self.build_hash, self.served_uri, self.freeze = desired_hash, build_hash, served_uri, freeze
        self.prev = snap.previous_status.get("rollout") or {}
        self.live_hash = template_hash_of(snap.deployment)
        self.canary = snap.canary
        self.deadline = progress_deadline(spec)
        self.made_room = self.prev.get("madeRoom") if self.prev.get("canaryHash") == desired_hash else None

    # -- outcomes ------------------------------------------------------------------------------------
    def _remove_canary(self) -> tuple[Delete, ...]:
        if self.canary is None:  # always read with a valid spec: None is absent
            return ()
        return (Delete("apps/v1", "Deployment", names.canary_name(self.owner.name)),
                Delete("v1", "ConfigMap", names.canary_config_map_name(self.owner.name)))

    def _analyses(self) -> list[dict[str, Any]]:
        return list(self.prev.get("analyses") or []) if self.prev.get("canaryHash") == self.hash else []

    def stable(self) -> RolloutDecision:
        """Nothing to roll out, or the stable side has taken the template: the canary goes once it is done."""
        keep = self.canary is not None and not promoted(self.snap.deployment)
        analyses = self._analyses()   # the last canary's verdicts stay visible after its promotion
        status = RolloutStatus(phase=PROMOTING if keep else STABLE, stable_hash=self.hash,
                               canary_hash=self.hash if keep or analyses else None, analyses=analyses,
                               failed_hash=self.prev.get("failedHash"),
                               failed_generation=self.prev.get("failedGeneration"))
        weight = share(_ready(self.canary), _ready(self.snap.deployment)) if keep else 0
        return RolloutDecision(status=status, deletions=() if keep else self._remove_canary(), route_weight=weight)

    def held(self, reason: str, message: str) -> RolloutDecision:
        status = RolloutStatus(phase=HELD, stable_hash=self.live_hash, canary_hash=self.hash, reason=reason,
                               message=message, failed_hash=self.prev.get("failedHash"),
                               failed_generation=self.prev.get("failedGeneration"))
        return RolloutDecision(status=status, hold_stable=True, deletions=self._remove_canary())

    def rolled_back(self, reason: str, message: str, analyses: list[dict[str, Any]] | None = None) -> RolloutDecision:
        status = RolloutStatus(phase=ROLLED_BACK, stable_hash=self.live_hash, canary_hash=self.hash, reason=reason,
                               message=message, failed_hash=self.hash, failed_generation=self.snap.generation,
                               analyses=analyses if analyses is not None else self._analyses())
        return RolloutDecision(status=status, hold_stable=True, deletions=self._remove_canary(),
                               patches=self._restore_room())

    def _stable_replicas(self, replicas: int) -> Patch:
        return Patch("apps/v1", "Deployment", names.child_name(self.owner.name), {"spec": {"replicas": replicas}})

    def _restore_room(self) -> tuple[Patch, ...]:
        """The stable pods stopped to make room come back with the canary's removal."""
        if not self.made_room or self.spec.autoscaling is not None:
            return ()
        return (self._stable_replicas(self.spec.replicas),)

    def _no_room(self) -> bool:
        """The canary's pods wait for GPUs that no node has free."""
        wanted = f"Insufficient {self.spec.serving.gpu_resource}"
        return any(_track(p) == names.CANARY and c.get("type") == "PodScheduled" and c.get("status") == "False"
                   and wanted in (c.get("message") or "")
                   for p in self.snap.pods for c in (p.get("status") or {}).get("conditions") or [])

    def _make_room(self, stable: int, want: int) -> tuple[Patch, ...]:
        """No free GPU for a surge: one stable pod at a time makes way for the canary's (without an HPA, which
        owns the replicas otherwise, and never below one serving pod). The next stable pod is replaced only
        after the canary is Ready and has passed."""
        if self.made_room or self.rollout.steps or self.spec.autoscaling is not None or stable - want < 1:
            return ()
        if not self._no_room():
            return ()
        self.made_room = want
        return (self._stable_replicas(stable - want),)

    def _canary_status(self, step: int, started: str, step_started: str, ready_at: str | None,
                       weight: int, message: str, analyses: list[dict[str, Any]]) -> RolloutStatus:
        return RolloutStatus(phase=CANARY, stable_hash=self.live_hash, canary_hash=self.hash, step=step,
                             weight=weight, started_at=started, step_started_at=step_started, ready_at=ready_at,
                             reason=CANARY_STEP, message=message, analyses=analyses, made_room=self.made_room,
                             failed_hash=self.prev.get("failedHash"),
                             failed_generation=self.prev.get("failedGeneration"))

    # -- the pass --------------------------------------------------------------------------------------
    def decide(self) -> RolloutDecision:
        if self.snap.deployment is None:
            return self.stable()   # the first rollout: nothing serves yet, so nothing to protect
        if self.live_hash == self.hash:
            return self.stable()
        if self.prev.get("failedHash") == self.hash and self.prev.get("failedGeneration") == self.snap.generation:
            return self.rolled_back(self.prev.get("reason") or ROLLED_BACK, self.prev.get("message") or "")
        if self.rollout.abort:
            return self.rolled_back(ABORTED, "The rollout was aborted (spec.serving.rollout.abort); stable serves.")
        if template_hash_of(self.canary) != self.hash:
            return self.start()
        return self.step()

    def start(self) -> RolloutDecision:
        """A new canary: only once nothing that can be checked in advance stands in its way."""
        if self.freeze and not self.rollout.force:
            return self.held(CHANGE_FREEZE, f"{self.freeze}: new rollouts and builds wait until it ends "
                                             "(set spec.serving.rollout.force to override). Scaling is not frozen.")
        if self.served_uri.startswith("pvc://"):
            claim = claim_of(self.served_uri)
            if "claim" not in self.snap.read:  # observe reads it whenever a canary may start; not yet here
                return self.held(CHECKING, f"Checking PersistentVolumeClaim {claim} before the canary starts.")
            if self.snap.claim is None:
                return self.held(CLAIM_NOT_FOUND, f"PersistentVolumeClaim {claim} named by the model's URI does "
                                                  "not exist in this namespace; the current pods keep serving.")
        now = rfc3339(self.now)
        return self._run_step(0, now, now, None, [])

    def _weight(self, step: int) -> int | None:
        return self.rollout.steps[step].weight if self.rollout.steps else None

    def _run_step(self, step: int, started: str, step_started: str, ready_at: str | None,
                  analyses: list[dict[str, Any]], extra: tuple[dict[str, Any], ...] = (),
                  patches: tuple[Patch, ...] = ()) -> RolloutDecision:
        stable = int(((self.snap.deployment or {}).get("spec") or {}).get("replicas") or 0)
        replicas = canary_replicas(self._weight(step), stable)
        children = render_canary_children(self.owner, self.spec, self.build_hash, replicas)
        ready = _ready(self.canary) if template_hash_of(self.canary) == self.hash else 0
        total = len(self.rollout.steps) or 1
        message = (f"step {step + 1}/{total}: {replicas} canary pod(s) beside {stable} stable, "
                   f"{share(replicas, stable)}% of the pods; {min(ready, replicas)}/{replicas} ready")
        wake = _at(step_started) + dt.timedelta(seconds=self.deadline) if ready_at is None else None
        pod_share = share(min(ready, replicas), stable)
        status = self._canary_status(step, started, step_started, ready_at, pod_share, message, analyses)
        # A Gateway splits exactly: the step's weight, once the canary pods can take it.
        route = (self._weight(step) or pod_share) if ready >= replicas else 0
        return RolloutDecision(status=status, hold_stable=True, applies=(*children, *extra), patches=patches,
                               wake_at=wake, route_weight=route)

    def step(self) -> RolloutDecision:
        prev, steps = self.prev, self.rollout.steps
        step = int(prev.get("step") or 0) if prev.get("canaryHash") == self.hash else 0
        step = min(step, max(len(steps) - 1, 0))
        started = prev.get("startedAt") or rfc3339(self.now)
        step_started = prev.get("stepStartedAt") or started
        analyses = self._analyses()
        stable = int((self.snap.deployment.get("spec") or {}).get("replicas") or 0)
        want = canary_replicas(self._weight(step), stable)
        if _ready(self.canary) < want or int((self.canary.get("spec") or {}).get("replicas") or 0) != want:
            waited = (self.now - _at(step_started)).total_seconds()
            if waited >= self.deadline:
                return self.rolled_back(CANARY_NOT_READY, (
                    f"The canary was not Ready within its progress deadline ({self.deadline}s): "
                    f"{_why_not_ready(self.snap.pods)}. Stable keeps serving."))
            room = self._make_room(stable, want)
            decision = self._run_step(step, started, step_started, None, analyses, patches=room)
            if self.made_room:
                decision = _with_message(decision, decision.status.message + (
                    f"; no free GPU for a surge: {self.made_room} stable pod(s) made room"))
            return decision
        ready_at = prev.get("readyAt") or rfc3339(self.now)
        if self.rollout.paused:
            decision = self._run_step(step, started, step_started, ready_at, analyses)
            return _with_message(decision, decision.status.message + "; paused (spec.serving.rollout.paused)")
        pause = steps[step].pause_seconds if steps else 0
        pause_ends = _at(ready_at) + dt.timedelta(seconds=pause)
        if self.now < pause_ends:
            decision = self._run_step(step, started, step_started, ready_at, analyses)
            return _with_wake(decision, pause_ends)
        analysis = self.rollout.analysis_in_force()
        if analysis is not None and not any(a.get("step") == step for a in analyses):
            return self.analyse(step, started, step_started, ready_at, analyses)
        return self.advance(step, started, analyses)

    def analyse(self, step: int, started: str, step_started: str, ready_at: str,
                analyses: list[dict[str, Any]]) -> RolloutDecision:
        analysis = self.rollout.analysis_in_force()
        job = self.snap.analysis_job
        name = names.analysis_job_name(self.owner.name, self.hash, step)
        if "analysis_job" not in self.snap.read or (job is not None and job["metadata"]["name"] != name):
            # Not read for this step yet (the read follows status.rollout): a Job's template is immutable,
            # so it is created only once it is known to be absent.
            decision = self._run_step(step, started, step_started, ready_at, analyses)
            return _with_wake(_with_message(decision, decision.status.message + "; analysis starts"),
                              self.now + dt.timedelta(seconds=1))
        if job is None:
            target = AnalysisTarget(self.hash, step, _ips(self.snap.pods, names.STABLE),
                                    _ips(self.snap.pods, names.CANARY),
                                    probe_uri(self.spec, analysis, self.served_uri))
            created = render_analysis_job(self.owner, self.spec, analysis, target)
            decision = self._run_step(step, started, step_started, ready_at, analyses, extra=(created,))
            return _with_message(decision, decision.status.message + f"; analysing in Job {name}")
        if not finished(job):
            decision = self._run_step(step, started, step_started, ready_at, analyses)
            return _with_message(decision, decision.status.message + f"; analysing in Job {job['metadata']['name']}")
        result = recorded_result(job, ANNOTATION_ANALYSIS_RESULT)
        patches: tuple[Patch, ...] = ()
        if result is None:
            result = result_from_pods(self.snap.analysis_pods, "analyze", ANALYSIS_ERROR)
            if result is not None:
                patches = (Patch("batch/v1", "Job", job["metadata"]["name"],
                                 result_patch(result, ANNOTATION_ANALYSIS_RESULT)),)
        if result is None:
            result = {"phase": "Failed", "reason": ANALYSIS_ERROR,
                      "message": f"analysis Job {job['metadata']['name']} finished without a result"}
        figures = {k: float(v) for k, v in (result.get("figures") or {}).items() if isinstance(v, (int, float))}
        passed = result.get("phase") == "Succeeded" and bool(result.get("passed"))
        record = AnalysisResult(step=step, passed=passed, reason=result.get("reason") or None,
                                message=(result.get("message") or "")[:600] or None, figures=figures,
                                job=job["metadata"]["name"]).model_dump(mode="json", by_alias=True, exclude_none=True)
        analyses = [*analyses, record][-16:]
        if not passed:
            decision = self.rolled_back(result.get("reason") or ANALYSIS_ERROR,
                                        f"Analysis at step {step + 1} failed: {result.get('message') or 'no message'}. "
                                        "The canary was removed; stable keeps serving.", analyses)
            return RolloutDecision(status=decision.status, hold_stable=True, patches=patches,
                                   deletions=decision.deletions)
        decision = self.advance(step, started, analyses)
        return replace(decision, patches=decision.patches + patches)

    def advance(self, step: int, started: str, analyses: list[dict[str, Any]]) -> RolloutDecision:
        if step + 1 < len(self.rollout.steps):
            return self._run_step(step + 1, started, rfc3339(self.now), None, analyses)
        # Promotion: the stable side takes the template now; the canary stays until it is done, unless it
        # holds the only free GPUs (it made room): then its GPUs go to the stable side's new pods at once.
        status = RolloutStatus(phase=PROMOTING, stable_hash=self.live_hash, canary_hash=self.hash,
                               step=step, started_at=started, reason="Promoting",
                               message="The canary passed; the stable pods take the new template.",
                               analyses=analyses, failed_hash=self.prev.get("failedHash"),
                               failed_generation=self.prev.get("failedGeneration"))
        if self.made_room:
            return RolloutDecision(status=status, deletions=self._remove_canary())
        weight = share(_ready(self.canary), int((self.snap.deployment.get("spec") or {}).get("replicas") or 0))
        return RolloutDecision(status=status, route_weight=weight)


def _with_message(decision: RolloutDecision, message: str) -> RolloutDecision:
    return replace(decision, status=decision.status.model_copy(update={"message": message}))


def _with_wake(decision: RolloutDecision, at: dt.datetime) -> RolloutDecision:
    wake = min(w for w in (decision.wake_at, at) if w is not None)
    return replace(decision, wake_at=wake)


def decide_rollout(spec: ModelDeploymentSpec, owner: Owner, snap: Snapshot, desired_hash: str,
                   build_hash: str | None, served_uri: str, now: dt.datetime, freeze: str | None) -> RolloutDecision:
    """`desired_hash`: the template hash of the stable Deployment this spec renders. `freeze`: why new
    rollouts are frozen now (an active promotion window), or None."""
    return _Rollout(spec, owner, snap, desired_hash, build_hash, served_uri, now, freeze).decide()
