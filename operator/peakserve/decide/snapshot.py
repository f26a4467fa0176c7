"""What one reconcile pass knows of the cluster: a typed snapshot, and which reads fill it.

The reads are decided here (pure) and carried out by cluster/observe.py, so the knowledge of which
objects matter to a ModelDeployment lives next to the code that decides on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api.identity import build_hash
from ..api.spec import ModelDeploymentSpec
from ..api.validation import InvalidSpec
from ..render import names
from ..render.analysis_job import ANNOTATION_ANALYSIS_RESULT
from ..render.deployment import claim_of
from ..render.headroom import headroom_name
from .build_job import needs_pods

# Why this pass runs. A child event changes no spec: it reports, and converges only what the child's
# change asks for (see decide.should_converge). The others converge everything.
SPEC = "spec"    # kopf create, update or resume
CHILD = "child"  # a Deployment, HPA, Pod or build Job of ours changed
DRIFT = "drift"  # the periodic level-triggered check
WAKE = "wake"    # a timer set at the moment a promotion floor changes
CAUSES = (SPEC, CHILD, DRIFT, WAKE)

Body = dict[str, Any]
ParsedSpec = ModelDeploymentSpec | InvalidSpec  # the spec, or why it cannot be served


@dataclass(frozen=True)
class Snapshot:
    """Everything one pass read, once. A slot that was not read is not in `read`: unknown, not absent."""

    body: Body                               # the ModelDeployment: metadata, spec and our last status
    cause: str = SPEC
    keda_served: bool = False                # discovery: the cluster serves keda.sh/v1alpha1
    gateway_served: bool = False             # discovery: the cluster serves gateway.networking.k8s.io/v1
    deployment: Body | None = None           # the Triton Deployment
    hpa: Body | None = None                  # our HorizontalPodAutoscaler
    scaled_object: Body | None = None        # our KEDA ScaledObject
    headroom: Body | None = None             # the GPU headroom Deployment
    build_job: Body | None = None            # the build Job of the current spec's build hash
    pods: tuple[Body, ...] = ()              # the Triton pods
    build_pods: tuple[Body, ...] = ()        # the build Job's pods, read only to recover an unrecorded result
    canary: Body | None = None               # the canary Deployment
    analysis_job: Body | None = None         # the analysis Job of the canary's current step
    analysis_pods: tuple[Body, ...] = ()     # its pods, read only to recover an unrecorded result
    claim: Body | None = None                # the PersistentVolumeClaim a new canary would mount
    read: frozenset[str] = field(default_factory=frozenset)
    rejected: str | None = None              # the API server refused the rendered children (dry run)

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"].get("namespace", "default")

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    @property
    def previous_status(self) -> Body:
        return self.body.get("status") or {}


@dataclass(frozen=True)
class Read:
    """One GET (by name) or LIST (by label selector) in the ModelDeployment's namespace."""

    slot: str  # the Snapshot field the answer fills
    api_version: str
    kind: str
    name: str | None = None
    selector: str | None = None


def first_reads(snap: Snapshot, spec: ParsedSpec) -> list[Read]:
    """The children whose state decides this pass. Objects that only matter for pruning are read when
    the pass may prune (not on a child event, which changes no spec)."""
    valid = isinstance(spec, ModelDeploymentSpec)
    child = names.child_name(snap.name)
    pruning = snap.cause != CHILD
    reads = [Read("deployment", "apps/v1", "Deployment", child)]
    if pruning or (valid and spec.autoscaling is not None):
        reads.append(Read("hpa", "autoscaling/v2", "HorizontalPodAutoscaler", child))
    if pruning:
        reads.append(Read("headroom", "apps/v1", "Deployment", headroom_name(snap.name)))
        if snap.keda_served:
            reads.append(Read("scaled_object", "keda.sh/v1alpha1", "ScaledObject", child))
    if valid and spec.build is not None:
        reads.append(Read("build_job", "batch/v1", "Job", names.build_job_name(snap.name, build_hash(spec))))
    if valid:
        reads.append(Read("canary", "apps/v1", "Deployment", names.canary_name(snap.name)))
        rollout = snap.previous_status.get("rollout") or {}
        if rollout.get("phase") == "Canary" and rollout.get("canaryHash"):
            job = names.analysis_job_name(snap.name, rollout["canaryHash"], int(rollout.get("step") or 0))
            reads.append(Read("analysis_job", "batch/v1", "Job", job))
    return reads


def served_uri(spec: ModelDeploymentSpec) -> str:
    """Where the pods' model comes from: the ready-made URI, or the build's artifact store."""
    return spec.model.uri if spec.build is None else spec.build.artifacts.uri


def _claim_read(snap: Snapshot, spec: ParsedSpec) -> Read | None:
    """Before a canary is created, the claim it would mount must exist (checked, not left to a stuck pod).
    Read only when a rollout may start: a new spec, a rollout not settled, or stable pods on another template
    than the last settled one; a drift pass over a settled rollout needs no claim."""
    if not isinstance(spec, ModelDeploymentSpec) or snap.deployment is None or snap.canary is not None:
        return None
    rollout = snap.previous_status.get("rollout") or {}
    live = ((snap.deployment.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_HASH)
    if snap.cause != SPEC and rollout.get("phase") == "Stable" and rollout.get("stableHash") == live:
        return None
    uri = served_uri(spec)
    if not uri.startswith("pvc://"):
        return None
    return Read("claim", "v1", "PersistentVolumeClaim", claim_of(uri))


def _pods_matter(snap: Snapshot, spec: ParsedSpec) -> bool:
    """Pods explain why replicas are not ready (scheduling), and their start times set the promotion lead."""
    status = (snap.deployment or {}).get("status") or {}
    desired = ((snap.deployment or {}).get("spec") or {}).get("replicas") or 0
    if (status.get("replicas") or 0) > 0 and (status.get("readyReplicas") or 0) < desired:
        return True
    if snap.canary is not None:  # the canary's pods: why they are not Ready, and their IPs for the analysis
        return True
    autoscaling = spec.autoscaling if isinstance(spec, ModelDeploymentSpec) else None
    return bool(autoscaling and autoscaling.schedules and autoscaling.lead_time_seconds is None)


def second_reads(snap: Snapshot, spec: ParsedSpec) -> list[Read]:
    """Lists that only the first reads show to be needed."""
    reads = []
    if _pods_matter(snap, spec):
        reads.append(Read("pods", "v1", "Pod", selector=names.pod_selector(snap.name)))
    if snap.build_job is not None and needs_pods(snap.build_job):
        job = snap.build_job["metadata"]["name"]
        reads.append(Read("build_pods", "v1", "Pod", selector=f"batch.kubernetes.io/job-name={job}"))
    if snap.analysis_job is not None and needs_pods(snap.analysis_job, ANNOTATION_ANALYSIS_RESULT):
        job = snap.analysis_job["metadata"]["name"]
        reads.append(Read("analysis_pods", "v1", "Pod", selector=f"batch.kubernetes.io/job-name={job}"))
    claim = _claim_read(snap, spec)
    if claim is not None:
        reads.append(claim)
    return reads
