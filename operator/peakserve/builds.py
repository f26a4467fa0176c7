"""The build Job of a ModelDeployment: make sure it exists, and read how it ended.

A Job per build hash makes builds idempotent (the name is the hash; server-side apply of an
existing Job changes nothing) and cacheable (a finished Job keeps its result in an annotation,
so returning to an earlier spec reuses its artifact without building again).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .api.spec import ModelDeploymentSpec
from .build.identity import build_hash
from .build.redact import redact_uri
from .kube import Kube
from .render import names
from .render.build_job import artifact_uri, render_build_job
from .render.owner import Owner

log = logging.getLogger("peakserve.builds")

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
NO_RESULT = "NoBuildResult"
MAX_MESSAGE = 600


@dataclass
class BuildState:
    hash: str
    job: str
    phase: str
    reason: str = ""
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    artifact: str = ""

    @property
    def passed(self) -> bool:
        return self.phase == SUCCEEDED

    def status(self, serving_hash: str | None) -> dict[str, Any]:
        """status.build: what the user needs to see; every URI with credentials removed."""
        out: dict[str, Any] = {"hash": self.hash, "job": self.job, "phase": self.phase,
                               "servingHash": serving_hash}
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message[:MAX_MESSAGE]
        if self.passed:
            out["artifact"] = redact_uri(self.artifact)
        for key in ("precision", "candidate", "digest"):
            if self.result.get(key):
                out[key] = self.result[key]
        figures = {k: float(v) for k, v in (self.result.get("figures") or {}).items()
                   if isinstance(v, (int, float))}
        if figures:
            out["figures"] = figures
        if self.result.get("rejected"):
            out["rejected"] = {k: str(v)[:200] for k, v in self.result["rejected"].items()}
        return {k: v for k, v in out.items() if v is not None}


def _job_condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def _termination_message(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if cs.get("name") == "build":
            terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("message"):
                return terminated["message"]
    return None


def _parse_result(text: str | None) -> dict[str, Any] | None:
    try:
        result = json.loads(text) if text else None
    except ValueError:
        return None
    return result if isinstance(result, dict) and result.get("phase") in (SUCCEEDED, FAILED) else None


def read_result(kube: Kube, job: dict[str, Any]) -> dict[str, Any] | None:
    """The builder's result: from the Job's annotation if recorded, else from its newest pod."""
    meta = job["metadata"]
    recorded = _parse_result((meta.get("annotations") or {}).get(names.ANNOTATION_BUILD_RESULT))
    if recorded:
        return recorded
    pods = kube.list("v1", "Pod", meta["namespace"], f"batch.kubernetes.io/job-name={meta['name']}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    fallback = None
    for pod in pods:
        text = _termination_message(pod)
        result = _parse_result(text)
        if result:
            return result
        fallback = fallback or text
    if fallback:  # FallbackToLogsOnError: the builder crashed; its log tail is the explanation
        return {"phase": FAILED, "reason": "BuildCrashed", "message": fallback[-MAX_MESSAGE:]}
    return None


def _record(kube: Kube, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Keep the result on the Job itself: pods are garbage-collected, the Job stays as the cache."""
    meta = job["metadata"]
    kube.merge_patch("batch/v1", "Job", meta["namespace"], meta["name"],
                     {"metadata": {"annotations": {names.ANNOTATION_BUILD_RESULT: json.dumps(result)}}})


def state_of(kube: Kube, job: dict[str, Any], spec: ModelDeploymentSpec, bhash: str) -> BuildState:
    name = job["metadata"]["name"]
    state = BuildState(hash=bhash, job=name, phase=PENDING, artifact=artifact_uri(spec, bhash))
    complete, failed = _job_condition(job, "Complete"), _job_condition(job, "Failed")
    if not (complete or failed):
        active = int((job.get("status") or {}).get("active") or 0)
        state.phase = RUNNING if active else PENDING
        state.reason = "Building"
        state.message = f"Building the model in Job {name}."
        return state
    result = read_result(kube, job)
    if result is None:
        state.phase, state.reason = FAILED, (failed or {}).get("reason") or NO_RESULT
        state.message = ((failed or {}).get("message") or
                         f"Job {name} finished without a build result in its termination message.")
        return state
    if "annotations" not in job["metadata"] or names.ANNOTATION_BUILD_RESULT not in job["metadata"]["annotations"]:
        _record(kube, job, result)
    state.result = result
    state.phase = SUCCEEDED if complete and result["phase"] == SUCCEEDED else FAILED
    state.reason = result.get("reason") or ((failed or {}).get("reason") or "")
    state.message = result.get("message") or ""
    return state


def ensure_build(kube: Kube, owner: Owner, spec: ModelDeploymentSpec) -> BuildState:
    """The build of this spec: created if missing (never twice: the name is the hash), then observed."""
    bhash = build_hash(spec)
    name = names.build_job_name(owner.name, bhash)
    job = kube.get("batch/v1", "Job", owner.namespace, name)
    if job is None:
        job = kube.apply(render_build_job(owner, spec, bhash))
        log.info("%s/%s: started build %s (Job %s)", owner.namespace, owner.name, bhash, name)
    return state_of(kube, job, spec, bhash)
