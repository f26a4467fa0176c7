"""The build Job of a ModelDeployment, seen from the snapshot: where the model build is, and how it ended.

A Job per build hash makes builds idempotent (the name is the hash; server-side apply of an existing
Job changes nothing) and cacheable (a finished Job keeps its result in an annotation, so returning to
an earlier spec reuses its artifact without building again). Pure: the Job and its pods come in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..api.spec import BuildStatus
from ..redact import redact_uri
from ..render import names

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
    record: dict[str, Any] | None = None  # a result read from a pod, to be recorded on the Job

    @property
    def passed(self) -> bool:
        return self.phase == SUCCEEDED

    def status(self, serving_hash: str | None) -> BuildStatus:
        """status.build: what the user needs to see; every URI with credentials removed."""
        figures = {k: float(v) for k, v in (self.result.get("figures") or {}).items()
                   if isinstance(v, (int, float))}
        rejected = {k: str(v)[:200] for k, v in (self.result.get("rejected") or {}).items()}
        return BuildStatus(
            hash=self.hash, job=self.job, phase=self.phase, serving_hash=serving_hash,
            reason=self.reason or None, message=self.message[:MAX_MESSAGE] or None,
            artifact=redact_uri(self.artifact) if self.passed else None,
            precision=self.result.get("precision") or None, candidate=self.result.get("candidate") or None,
            digest=self.result.get("digest") or None, figures=figures, rejected=rejected)


def _job_condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def finished(job: dict[str, Any]) -> bool:
    return bool(_job_condition(job, "Complete") or _job_condition(job, "Failed"))


def termination_message(pod: dict[str, Any], container: str = "build") -> str | None:
    """What the container wrote to its termination message (or its log tail, when it crashed)."""
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if cs.get("name") == container:
            terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("message"):
                return terminated["message"]
    return None


def parse_result(text: str | None) -> dict[str, Any] | None:
    try:
        result = json.loads(text) if text else None
    except ValueError:
        return None
    return result if isinstance(result, dict) and result.get("phase") in (SUCCEEDED, FAILED) else None


def recorded_result(job: dict[str, Any], annotation: str = names.ANNOTATION_BUILD_RESULT) -> dict[str, Any] | None:
    return parse_result(((job.get("metadata") or {}).get("annotations") or {}).get(annotation))


def needs_pods(job: dict[str, Any], annotation: str = names.ANNOTATION_BUILD_RESULT) -> bool:
    """A finished Job whose result is not recorded yet: its pods hold the result."""
    return finished(job) and recorded_result(job, annotation) is None


def result_from_pods(pods: Sequence[dict[str, Any]], container: str = "build",
                     crashed: str = "BuildCrashed") -> dict[str, Any] | None:
    """The result from the newest pod that has one; a crash's log tail otherwise."""
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    fallback = None
    for pod in newest_first:
        text = termination_message(pod, container)
        result = parse_result(text)
        if result:
            return result
        fallback = fallback or text
    if fallback:  # FallbackToLogsOnError: the builder crashed; its log tail is the explanation
        return {"phase": FAILED, "reason": crashed, "message": fallback[-MAX_MESSAGE:]}
    return None


def build_state(bhash: str, job_name: str, artifact: str, job: dict[str, Any] | None,
                pods: Sequence[dict[str, Any]] = ()) -> BuildState:
    """Where the build of hash `bhash` is, from its Job (None: not created yet) and, for a finished
    Job without a recorded result, its pods."""
    state = BuildState(hash=bhash, job=job_name, phase=PENDING, artifact=artifact)
    if job is None or not finished(job):
        active = int(((job or {}).get("status") or {}).get("active") or 0)
        state.phase = RUNNING if active else PENDING
        state.reason, state.message = "Building", f"Building the model in Job {job_name}."
        return state
    complete, failed = _job_condition(job, "Complete"), _job_condition(job, "Failed")
    result = recorded_result(job)
    if result is None:
        result = result_from_pods(pods)
        state.record = result
    if result is None:
        state.phase, state.reason = FAILED, (failed or {}).get("reason") or NO_RESULT
        state.message = ((failed or {}).get("message") or
                         f"Job {job_name} finished without a build result in its termination message.")
        return state
    state.result = result
    state.phase = SUCCEEDED if complete and result["phase"] == SUCCEEDED else FAILED
    state.reason = result.get("reason") or ((failed or {}).get("reason") or "")
    state.message = result.get("message") or ""
    return state


def result_patch(record: dict[str, Any], annotation: str = names.ANNOTATION_BUILD_RESULT) -> dict[str, Any]:
    """Keep a result on the Job itself: pods are garbage-collected, the Job stays as the record."""
    return {"metadata": {"annotations": {annotation: json.dumps(record)}}}


def record_patch(state: BuildState) -> dict[str, Any] | None:
    return None if state.record is None else result_patch(state.record)
