"""What one reconcile pass knows of the cluster: a typed snapshot, and which reads fill it.

The reads are decided here (pure) and carried out by cluster/observe.py, so the knowledge of which
objects matter to a ModelDeployment lives next to the code that decides on them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..api import schedules
from ..api.identity import build_hash
from ..api.spec import GPU_PRODUCT_LABEL, ModelDeploymentSpec
from ..api.validation import InvalidSpec
from ..render import names
from ..render.analysis_job import ANNOTATION_ANALYSIS_RESULT
from ..render.deployment import claim_of
from ..render.headroom import headroom_name
from . import promotion
from .build_job import needs_pods
from . import capacity_target, predictive
from .range_result import RangeResult

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
    nodes: tuple[Body, ...] = ()             # the GPU nodes, read only inside a promotion's readiness horizon
    node_pods: tuple[Body, ...] = ()         # the non-terminated pods of all namespaces, read with `nodes`
    # Prometheus range queries by MetricsRead.slot, read only when due (metrics_reads); empty: none this pass
    metrics: Mapping[str, RangeResult] = field(default_factory=dict)
    read: frozenset[str] = field(default_factory=frozenset)
    rejected: str | None = None              # the API server refused the rendered children (dry run)
    applied_generation: int | None = None    # the generation this process applied last, before status says so

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
    """One GET (by name) or LIST (by label selector) in the ModelDeployment's namespace; `cluster`: a LIST of
    a cluster-scoped kind, or of a namespaced kind across all namespaces."""

    slot: str  # the Snapshot field the answer fills
    api_version: str
    kind: str
    name: str | None = None
    selector: str | None = None
    field_selector: str | None = None
    cluster: bool = False


def never_reconciled(snap: Snapshot) -> bool:
    """No pass has written this object's status yet, and its spec is the one it was created with. Then the only
    children that can exist are those an earlier pass of this same spec applied before it was cut off (an
    operator restart), which this pass applies again: none is there to prune, and no rollout has begun."""
    return snap.generation <= 1 and "observedGeneration" not in snap.previous_status


def _canary_may_exist(snap: Snapshot) -> bool:
    """A canary is created by a pass that moves the rollout out of Stable. A child event's pass reads it only
    while the last status says a rollout is in flight; spec, drift and wake-up passes read it always (they
    prune one left behind by a pass cut off before its status write)."""
    if never_reconciled(snap):
        return False
    phase = (snap.previous_status.get("rollout") or {}).get("phase")
    return snap.cause != CHILD or phase not in (None, "Stable")


def first_reads(snap: Snapshot, spec: ParsedSpec) -> list[Read]:
    """The children whose state decides this pass. Objects that only matter for pruning are read when
    the pass may prune: not on a child event, which changes no spec, nor on the first pass of a new object
    (`never_reconciled`), which reads no Deployment either. At 1,000 objects created at once these reads were
    most of the operator's requests."""
    valid = isinstance(spec, ModelDeploymentSpec)
    child = names.child_name(snap.name)
    new = never_reconciled(snap)
    pruning = snap.cause != CHILD and not new
    # The first pass of a new object creates the Deployment: only an earlier pass of this same spec, cut off
    # before its status write, can have made one, and applying it again is what this pass does anyway.
    creating = snap.cause == SPEC and new
    reads = [] if creating else [Read("deployment", "apps/v1", "Deployment", child)]
    if pruning or (valid and spec.autoscaling is not None):
        reads.append(Read("hpa", "autoscaling/v2", "HorizontalPodAutoscaler", child))
    # The ScaledObject is read to prune it, and whenever KEDA scales this spec: its conditions feed Degraded.
    autoscaling = spec.autoscaling if valid else None
    keda_engine = autoscaling is not None and (
        autoscaling.engine == "keda" or (autoscaling.engine == "auto" and snap.keda_served))
    if pruning:
        reads.append(Read("headroom", "apps/v1", "Deployment", headroom_name(snap.name)))
    if (pruning and snap.keda_served) or keda_engine:
        reads.append(Read("scaled_object", "keda.sh/v1alpha1", "ScaledObject", child))
    if valid and spec.build is not None:
        reads.append(Read("build_job", "batch/v1", "Job", names.build_job_name(snap.name, build_hash(spec))))
    if valid and _canary_may_exist(snap):
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
    if snap.cause == CHILD and snap.applied_generation == snap.generation:  # the first report of a new object
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


def promotion_reads(snap: Snapshot, spec: ParsedSpec, now: dt.datetime) -> list[Read]:
    """The GPU nodes and the pods holding their GPUs, for PromotionReady (decide/promotion.py): read only
    while a schedule is inside (or just before) its readiness horizon. Two cluster-wide LISTs: the nodes of
    the product (label selector), and the non-terminated pods (field selector); decide keeps those on the nodes."""
    if not isinstance(spec, ModelDeploymentSpec) or spec.autoscaling is None or not spec.autoscaling.schedules:
        return []
    measured = (snap.previous_status.get("autoscaling") or {}).get("measuredStartupSeconds")
    if not promotion.needs_reads(spec, schedules.lead_time(spec.autoscaling, measured), now):
        return []
    product = spec.serving.gpu_product
    return [Read("nodes", "v1", "Node", selector=f"{GPU_PRODUCT_LABEL}={product}" if product else None,
                 cluster=True),
            Read("node_pods", "v1", "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed",
                 cluster=True)]


@dataclass(frozen=True)
class MetricsRead:
    """One Prometheus range query (/api/v1/query_range), carried out by cluster/prometheus.py."""

    slot: str       # the key of Snapshot.metrics the answer fills
    address: str    # spec.autoscaling.prometheusAddress
    query: str
    start: float    # epoch seconds
    end: float
    step: float     # seconds


HISTORY_QUERY = "sum(rate(nv_inference_request_success{{{sel}}}[5m]))"
POD_RATE_QUERY = "sum by (pod) (rate(nv_inference_request_success{{{sel}}}[5m]))"
# Requests in flight per pod (Little's law: busy µs per second / 1e6). With the rate it gives the mean latency,
# in flight / rate = sum(rate(duration_us)) / sum(rate(success)) / 1000 ms, so a third query is not needed.
POD_IN_FLIGHT_QUERY = "sum by (pod) (rate(nv_inference_request_duration_us{{{sel}}}[5m])) / 1e6"
LEARN_SECONDS = 86400   # the per-pod windows capacity is learned from: the last day


def _pod_selector(snap: Snapshot) -> str:
    # Deployment pods are named <deployment>-<replicaset hash>-<pod hash> (as render/keda.py's triggers select).
    return f'namespace="{snap.namespace}",pod=~"{names.child_name(snap.name)}-[a-z0-9]+-[a-z0-9]+"'


def metrics_reads(snap: Snapshot, spec: ParsedSpec, now: dt.datetime) -> list[MetricsRead]:
    """The Prometheus reads that are due: the request-rate history for the predictive floor, and the per-pod
    5-minute windows to learn the capacity from, each at most every REFRESH_SECONDS (status remembers when).
    Nothing otherwise, so a pass over an object with nothing due costs no query."""
    if not isinstance(spec, ModelDeploymentSpec) or spec.autoscaling is None:
        return []
    autoscaling = spec.autoscaling
    before = snap.previous_status.get("autoscaling") or {}
    sel = _pod_selector(snap)
    step = predictive.STEP_SECONDS
    end = now.timestamp() // step * step
    reads = []
    if predictive.forecast_due(autoscaling, before, now):
        start = end - autoscaling.predictive.history_days * 86400   # 35 days at most: 10081 points
        reads.append(MetricsRead("request_history", autoscaling.prometheus_address, HISTORY_QUERY.format(sel=sel),
                                 start, end, step))
    if capacity_target.learning_due(autoscaling, before.get("capacity"), now):
        for slot, query in (("pod_rate", POD_RATE_QUERY), ("pod_in_flight", POD_IN_FLIGHT_QUERY)):
            reads.append(MetricsRead(slot, autoscaling.prometheus_address, query.format(sel=sel),
                                     end - LEARN_SECONDS, end, step))
    return reads
