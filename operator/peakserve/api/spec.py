"""The ModelDeployment spec, modelled once.

These models are the single source of truth: the CRD's openAPIV3Schema is generated
from them (see crd.py), and the operator parses every object through them. Bounds,
enums and defaults live in Field(); cross-field rules are CEL, attached with `cel()`
so the API server enforces them at `kubectl apply`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DEFAULT_S3_FETCH_IMAGE = "amazon/aws-cli:2.31.18"
DEFAULT_BUILDER_IMAGE = "ghcr.io/peakserve/peakserve-model-builder:0.1.0"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEFAULT_PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
LOCAL_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$"

# Flags peakserve sets itself; overriding them through extraArgs would break probes or ports.
MANAGED_TRITON_FLAGS = (
    "--model-repository", "--model-store", "--http-port", "--grpc-port", "--metrics-port",
    "--model-control-mode", "--strict-readiness", "--allow-metrics",
)


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """x-kubernetes-validations for a model: (rule, message[, fieldPath]) tuples."""
    validations = []
    for rule, message, *path in rules:
        entry = {"rule": rule, "message": message}
        if path:
            entry["fieldPath"] = path[0]
        validations.append(entry)
    return {"x-kubernetes-validations": validations}


class Spec(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, frozen once parsed."""

    # validate_default: enum defaults become plain strings too, like parsed values.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True, use_enum_values=True, validate_default=True)


class ModelFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    pytorch = "pytorch"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class DataType(str, Enum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    BF16 = "BF16"
    FP32 = "FP32"
    FP64 = "FP64"
    STRING = "STRING"


NAME_PATTERN = r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$"
# A Kubernetes object name (DNS-1123 subdomain), for the Secrets and PriorityClasses a spec names: the Pod
# template would refuse anything else, and then only the operator could tell.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Userinfo (user:secret@) is refused: credentials belong in a Secret, never in a URI that status shows.
URI_PATTERN = r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^@?#]*)?|s3://[^/@?#]+(/[^@?#]*)?|/[^@?#]*)$"


DIM_MESSAGE = "a dimension must be >= 1, or -1 for a variable dimension (Triton refuses 0)"


def _dim(value: int) -> int:
    if value == 0:  # the twin of the CEL rule below, for specs that never met the API server
        raise ValueError(DIM_MESSAGE)
    return value


# Triton's ValidateIOShape: every dimension is >= 1, or -1 (a wildcard). 0 would load nowhere.
Dim = Annotated[int, Field(ge=-1, json_schema_extra=cel(("self == -1 || self >= 1", DIM_MESSAGE))),
                AfterValidator(_dim)]
# Triton keys a model's inputs and its outputs by name: a repeated name is a load failure.
TENSOR_LIST = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class Tensor(Spec):
    """One input or output tensor of the model, as Triton's model configuration declares it."""

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN,
                      description="Tensor name, exactly as in the model file.")
    data_type: DataType = Field(description="Element type, Triton's TYPE_* without the prefix.")
    dims: list[Dim] = Field(min_length=1, max_length=8,
                            description="Shape without the batch dimension: each dimension >= 1, or -1 for a "
                                        "variable one (Triton refuses 0).")


class ModelSpec(Spec):
    """What to serve: the model's name in Triton, where its files are, and its signature."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
         "credentialsSecret applies only to s3:// URIs", ".credentialsSecret"),
        ("self.outputs.all(o, !self.inputs.exists(i, i.name == o.name))",
         "an output cannot have the name of an input (Triton keys tensors by name)", ".outputs"),
    ))

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN,
                      description="Model name inside Triton; clients call /v2/models/<name>/infer.")
    version: int = Field(default=1, ge=1, le=1_000_000,
                         description="Model version directory the files are served as.")
    uri: str | None = Field(
        default=None, min_length=1, max_length=1024, pattern=URI_PATTERN,
        description="Where the model version's files are: pvc://CLAIM/PATH, s3://BUCKET/PREFIX, "
                    "or an absolute node-local path for development. Leave it out when spec.build is set: "
                    "peakserve then serves the artifact the build produced.")
    format: ModelFormat = Field(default=ModelFormat.onnx, description="File format of the model.")
    precision: Precision = Field(default=Precision.fp32,
                                 description="Numeric precision being served. With spec.build the build "
                                             "chooses it; see status.build.precision.")
    max_batch_size: int = Field(default=64, ge=0, le=65536,
                                description="Largest batch Triton forms; 0 disables batching.")
    inputs: list[Tensor] = Field(min_length=1, max_length=64, json_schema_extra=TENSOR_LIST,
                                 description="Input tensors, each name once.")
    outputs: list[Tensor] = Field(min_length=1, max_length=64, json_schema_extra=TENSOR_LIST,
                                  description="Output tensors, each name once and none an input's.")
    credentials_secret: str | None = Field(
        default=None, max_length=253, pattern=OBJECT_NAME_PATTERN,
        description="Secret whose keys become environment variables of the model fetcher "
                    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) for s3:// URIs.")


class InstanceKind(str, Enum):
    GPU = "GPU"
    CPU = "CPU"


class InstanceGroup(Spec):
    """How many copies of the model Triton runs, and where (Triton's instance_group)."""

    kind: InstanceKind = Field(default=InstanceKind.GPU, description="Run the instances on GPU or CPU.")
    count: int = Field(default=1, ge=1, le=64, description="Model instances per device.")


class DynamicBatching(Spec):
    """Triton's dynamic batcher: combines single requests into batches on the server."""

    enabled: bool = Field(default=True, description="Turn the dynamic batcher on.")
    max_queue_delay_microseconds: int = Field(
        default=100, ge=0, le=10_000_000,
        description="How long a request may wait in the queue for a batch to fill, in microseconds.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, max_length=16,
        description="Batch sizes the batcher should aim for.")


# The pattern of Kubernetes' own OpenAPI admits some strings its quantity parser refuses (a decimal exponent
# such as 1e2.5, an exponent past int64): isQuantity is the parser itself, so those are refused at apply too
# instead of failing every apply of the Pod template.
QUANTITY = {"x-kubernetes-int-or-string": True, "maxLength": 64,
            "x-kubernetes-validations": [{"rule": "isQuantity(string(self))",
                                          "message": "must be a Kubernetes quantity, such as 500m, 2 or 8Gi"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}
RESOURCE_LIST = {
    "type": "object",
    "maxProperties": 16,
    "additionalProperties": QUANTITY,
    "x-kubernetes-validations": [{"rule": "self.all(k, !k.startsWith('nvidia.com/'))",
                                  "message": "set GPUs with serving.gpus and serving.gpuResource"}],
}


class ResourceRequirements(Spec):
    """Requests and limits for CPU, memory and ephemeral storage, as in a Pod."""

    requests: dict[str, int | str] = Field(
        default_factory=lambda: {"cpu": "2", "memory": "8Gi"},
        json_schema_extra=RESOURCE_LIST, description="Minimum resources the scheduler reserves.")
    limits: dict[str, int | str] = Field(
        default_factory=lambda: {"memory": "8Gi"},
        json_schema_extra=RESOURCE_LIST, description="Hard caps; a memory limit equal to the request avoids OOM surprises.")


class Toleration(Spec):
    """A Pod toleration; the nvidia.com/gpu NoSchedule toleration is always added."""

    key: str | None = Field(default=None, max_length=316, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty means all.")
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


IntOrPercent = {"x-kubernetes-int-or-string": True, "pattern": r"^(0|[1-9][0-9]*)%?$"}


MAX_STEPS = 10


class RolloutStep(Spec):
    """One canary step: the canary's share of the pods, then a pause before the analysis."""

    weight: int = Field(ge=1, le=99, description="Canary share of the serving pods, in percent. The split is "
                                                 "by replica count, so the share in force is rounded up to "
                                                 "whole canary pods (see status.rollout.weight).")
    pause_seconds: int = Field(default=300, ge=0, le=86400,
                               description="How long the canary serves at this weight before it is analysed.")


class ProbeKind(str, Enum):
    auto = "auto"
    ranker = "ranker"
    embedding = "embedding"
    generic = "generic"


class ProbeAnalysis(Spec):
    """Stable and canary answer the same fixed probe batch; their outputs are compared."""

    enabled: bool = Field(default=True, description="Run the probe comparison.")
    data_uri: str | None = Field(
        default=None, min_length=1, max_length=1024, pattern=URI_PATTERN,
        description="An .npz file with one array per input tensor (and optionally `labels`): pvc://CLAIM/PATH "
                    "or a node-local path. Without it, a built model's probe.npz (drawn from the build's "
                    "evaluation data) is used; a ready-made model without it skips the probe comparison.")
    rows: int = Field(default=512, ge=16, le=8192, description="Probe rows sent to each side.")
    kind: ProbeKind = Field(default=ProbeKind.auto,
                            description="ranker (one score per row), embedding (a vector per row), generic; "
                                        "auto: ranker when the first output has one value per row.")
    max_psi: float = Field(default=0.1, ge=0, le=10,
                           description="Rankers: largest population stability index of the canary's scores "
                                       "against the stable's.")
    top_k: int = Field(default=50, ge=1, le=8192, description="Rankers: size of the top set compared.")
    min_top_k_agreement: float = Field(default=0.8, ge=0, le=1,
                                       description="Rankers: smallest overlap of the top-k rows by score.")
    max_auc_drop: float = Field(default=0.02, ge=0, le=1,
                                description="Rankers with labelled probes: largest AUC loss against stable.")
    min_cosine: float = Field(default=0.99, ge=-1, le=1,
                              description="Embeddings: smallest per-row cosine similarity.")
    max_abs_diff: float | None = Field(default=None, ge=0,
                                       description="Every model: largest |canary - stable| allowed; unset reports "
                                                   "the figure without gating on it.")


class RolloutAnalysis(Spec):
    """Canary against stable, at the end of each step: Triton's metrics, then the probe comparison."""

    # No userinfo: it would sit in the analysis Job's arguments, readable by anyone who can read Jobs.
    prometheus_address: str = Field(default=DEFAULT_PROMETHEUS, min_length=1, max_length=512,
                                    pattern=r"^https?://[^@?#\s]+$",
                                    description="Prometheus that scrapes the Triton pods' metrics port.")
    window_seconds: int = Field(default=120, ge=30, le=3600,
                                description="Metrics window compared, ending when the step's pause ends.")
    min_requests: int = Field(default=20, ge=0, le=1_000_000,
                              description="Canary requests in the window below which the metric checks are "
                                          "reported as skipped (too little traffic to judge).")
    max_error_rate: float = Field(default=0.01, ge=0, le=1,
                                  description="Largest canary failure ratio (nv_inference_request_failure).")
    max_latency_increase: float = Field(default=0.5, ge=0, le=100,
                                        description="Canary mean request latency may exceed stable's by this "
                                                    "fraction (plus 2 ms).")
    max_queue_increase: float = Field(default=1.0, ge=0, le=100,
                                      description="Canary mean queue time may exceed stable's by this fraction "
                                                  "(plus 2 ms).")
    probe: ProbeAnalysis = Field(default_factory=ProbeAnalysis, description="The probe comparison.")


class ParentRef(Spec):
    """A Gateway the HTTPRoute attaches to (Gateway API parentRefs)."""

    name: str = Field(min_length=1, max_length=253, description="Gateway name.")
    namespace: str | None = Field(default=None, max_length=63, description="Gateway namespace; default: this one.")
    section_name: str | None = Field(default=None, max_length=253, description="Listener name on the Gateway.")


class Rollout(Spec):
    """How a new pod template replaces the serving one. Every change starts as a canary Deployment next
    to the stable one, so ready capacity never drops: the canary must turn Ready (and, with steps, pass its
    analysis) before the stable pods are touched, and a canary that fails is removed while stable serves."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.maxSurge) || !has(self.maxUnavailable) || "
         "!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",
         "maxSurge and maxUnavailable cannot both be zero"),
        (" && ".join(f"(self.steps.size() <= {i} || self.steps[{i - 1}].weight < self.steps[{i}].weight)"
                     for i in range(1, MAX_STEPS)),
         "steps must increase in weight", ".steps"),
    ))

    max_surge: int | str | None = Field(
        default=None, json_schema_extra=IntOrPercent,
        description="Extra stable pods allowed while the stable side takes the new template. Unset: 0, "
                    "because the Ready canary pods are the surge; each extra pod needs free GPUs.")
    max_unavailable: int | str | None = Field(
        default=None, json_schema_extra=IntOrPercent,
        description="Stable pods that may be down while it takes the new template. Unset: 0 with a surge, "
                    "else 1 (covered by the Ready canary pods, which stay until the stable side is done).")
    progress_deadline_seconds: int | None = Field(
        default=None, ge=30, le=14400,
        description="How long the canary may take to turn Ready before it is rolled back. Unset: "
                    "serving.startupTimeoutSeconds + 300.")
    steps: list[RolloutStep] = Field(
        default_factory=list, max_length=MAX_STEPS,
        description="Canary steps in increasing weight. Empty: one canary pod is started first (a surge) "
                    "and the stable side takes over as soon as it is Ready.")
    analysis: RolloutAnalysis | None = Field(
        default=None, description="Analysis after each step. Default: on when steps are given, off otherwise.")
    paused: bool = Field(default=False, description="Hold the canary at its current step.")
    abort: bool = Field(default=False, description="Remove the canary now and keep stable serving; the verdict "
                                                   "holds for this spec until it changes.")
    force: bool = Field(default=False, description="Roll out and build even inside a promotion's change freeze.")
    route_parents: list[ParentRef] = Field(
        default_factory=list, max_length=16,
        description="Gateways for the HTTPRoute peakserve renders when the cluster serves the Gateway API "
                    "(exact canary weights for traffic through a Gateway).")

    def analysis_in_force(self) -> RolloutAnalysis | None:
        if self.analysis is not None:
            return self.analysis
        return RolloutAnalysis() if self.steps else None


class ServingSpec(Spec):
    """How Triton runs: image, GPUs, placement, and Triton's own settings."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.gpus > 0 || !has(self.gpuProduct)", "gpuProduct needs gpus > 0", ".gpuProduct"),
        ("self.gpus > 0 || self.instanceGroups.all(g, g.kind == 'CPU')",
         "GPU instance groups need gpus > 0; use kind: CPU for CPU-only serving", ".instanceGroups"),
    ))

    image: str = Field(default=DEFAULT_TRITON_IMAGE, min_length=1, max_length=512,
                       description="Triton Inference Server image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image.")
    image_pull_secrets: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=16,
                                          description="Secrets for pulling from a private registry.")
    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per replica; 0 serves on CPU.")
    gpu_resource: str = Field(
        default="nvidia.com/gpu", pattern=r"^nvidia\.com/(gpu|mig-[1-7]g\.[0-9]+gb)$",
        description="Extended resource to request: nvidia.com/gpu, or a MIG slice such as nvidia.com/mig-1g.10gb.")
    gpu_product: str | None = Field(
        default=None, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description=f"GPU model to run on, matched against the node label {GPU_PRODUCT_LABEL} "
                    "that GPU feature discovery sets (for example NVIDIA-A10).")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements,
                                            description="CPU and memory per replica.")
    node_selector: dict[str, str] = Field(default_factory=dict, json_schema_extra={"maxProperties": 32},
                                          description="Extra node labels to match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="Extra tolerations.")
    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Pod affinity and anti-affinity, as in a Pod spec.")
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_PATTERN,
                                            description="PriorityClass of the Triton pods.")
    instance_groups: list[InstanceGroup] = Field(
        default_factory=lambda: [InstanceGroup()], min_length=1, max_length=8,
        description="Triton instance groups (how many model copies run per device).")
    dynamic_batching: DynamicBatching = Field(default_factory=DynamicBatching,
                                              description="Triton's dynamic batcher.")
    extra_args: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list, max_length=32,
        json_schema_extra=cel(tuple([
            "self.all(a, " + " && ".join(f"!a.startsWith('{f}')" for f in MANAGED_TRITON_FLAGS) + ")",
            "extraArgs cannot override flags peakserve manages: " + ", ".join(MANAGED_TRITON_FLAGS),
        ])),
        description="Extra tritonserver flags, such as --log-verbose=1.")
    startup_timeout_seconds: int = Field(
        default=900, ge=30, le=7200,
        description="How long a pod may take to load its model before it is restarted.")
    rollout: Rollout = Field(default_factory=Rollout, description="Rolling-update strategy.")


class Metric(str, Enum):
    requestRate = "requestRate"
    concurrency = "concurrency"
    queueTime = "queueTime"
    pendingRequests = "pendingRequests"
    gpuUtilization = "gpuUtilization"


# The signals proportional to load: their target is a share of one replica's capacity.
CAPACITY_METRICS = ("requestRate", "concurrency")
# The target of the other metrics when spec.autoscaling.target is left out, in their unit.
DEFAULT_TARGETS = {"queueTime": 50_000, "pendingRequests": 4, "gpuUtilization": 70}


class ScalingRules(Spec):
    """One direction of HPA behavior: how fast replicas may be added or removed.
    Unset fields take the direction's defaults (see SCALE_UP and SCALE_DOWN)."""

    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600,
                                                     description="Look-back window that damps flapping.")
    max_pods: int | None = Field(default=None, ge=1, le=1000, description="At most this many pods per period.")
    max_percent: int | None = Field(default=None, ge=1, le=1000,
                                    description="At most this percentage of current pods per period.")
    period_seconds: int | None = Field(default=None, ge=1, le=1800, description="Length of one period.")

    def with_defaults(self, defaults: "ScalingRules") -> "ScalingRules":
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


# Up fast (a promotion minute is no time to wait), down slowly (a GPU pod takes minutes to come back).
SCALE_UP = ScalingRules(stabilization_window_seconds=0, max_pods=4, max_percent=100, period_seconds=15)
SCALE_DOWN = ScalingRules(stabilization_window_seconds=300, max_pods=1, max_percent=10, period_seconds=60)


class PromotionSchedule(Spec):
    """An announced promotion: the replica floor rises before `start` (by the lead time) and holds until `end`."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.end > self.start", "end must be after start", ".end"),
    ))

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="Name of the promotion, such as singles-day.")
    start: str = Field(pattern=LOCAL_TIME_PATTERN, max_length=19,
                       description="Local start time in `timezone`, YYYY-MM-DDTHH:MM:SS (no offset).")
    end: str = Field(pattern=LOCAL_TIME_PATTERN, max_length=19, description="Local end time in `timezone`, YYYY-MM-DDTHH:MM:SS.")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$",
                          description="IANA time zone of start and end, such as Asia/Shanghai.")
    min_replicas: int = Field(ge=1, le=1000, description="Replica floor from start (minus the lead time) to end.")


class Headroom(Spec):
    """Low-priority placeholder pods that hold warm GPUs: a cluster autoscaler keeps nodes for them, and
    Triton pods preempt them. Needs a PriorityClass below the Triton pods' priority."""

    replicas: int = Field(ge=1, le=100, description="Placeholder pods, each requesting one replica's GPUs.")
    priority_class_name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN,
                                     description="PriorityClass of the placeholders (for example value -10).")
    image: str = Field(default=DEFAULT_PAUSE_IMAGE, min_length=1, max_length=512,
                       description="Placeholder container image.")


class Capacity(Spec):
    """What one replica serves at the latency SLO: given (as `peakserve bench --capacity` measured it), or learned
    online from Prometheus: the highest per-pod request rate, sustained over a 5-minute window, at which the
    mean latency stayed under `sloMilliseconds`."""

    requests_per_second: float | None = Field(
        default=None, gt=0, le=1_000_000,
        description="Requests/s one replica serves at the SLO. Unset: learned online (status.autoscaling.capacity).")
    concurrency: float | None = Field(
        default=None, gt=0, le=100_000,
        description="Requests in flight (queued plus executing) per replica at that rate. Unset: learned, or "
                    "requestsPerSecond x sloMilliseconds when only the rate is known.")
    slo_milliseconds: int = Field(default=100, ge=1, le=600_000,
                                  description="Mean request latency that counts as serving within the SLO.")
    learn: bool = Field(default=True, description="Learn the capacity from Prometheus when it is not given.")


class Predictive(Spec):
    """A floor from the model's own history: the request rate of the next lead-time window, forecast from the same
    time yesterday and last week scaled by the recent level, divided by the target per replica."""

    enabled: bool = Field(default=True, description="Raise the floor to the forecast (never above maxReplicas).")
    history_days: int = Field(default=8, ge=2, le=35,
                              description="Days of request-rate history read from Prometheus.")
    min_history_hours: int = Field(default=25, ge=25, le=840,
                                   description="Less history than this: no forecast, and status says so.")


class AutoscalingSpec(Spec):
    """Metric-driven replicas through a HorizontalPodAutoscaler. When set, spec.replicas is ignored
    and peakserve never writes the Deployment's replica count."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
        ("self.metric != 'gpuUtilization' || !has(self.target) || self.target <= 100",
         "gpuUtilization target is a percentage (1-100)", ".target"),
        ("!has(self.target) || !(self.metric in ['requestRate', 'concurrency'])",
         "requestRate and concurrency aim at targetUtilization of the capacity; target is for the other metrics",
         ".target"),
        ("self.schedules.all(s, s.minReplicas <= self.maxReplicas)",
         "a schedule's minReplicas must be <= maxReplicas", ".schedules"),
    ))

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metric: Metric = Field(
        default=Metric.requestRate,
        description="Load signal: requestRate (requests/s served per pod) or concurrency (requests in flight per "
                    "pod), both proportional to load and aimed at targetUtilization of the capacity; or queueTime "
                    "(average queue time per request, microseconds), pendingRequests (requests waiting per pod), "
                    "gpuUtilization (percent).")
    target: int | None = Field(default=None, ge=1, le=100_000_000,
                               description="queueTime, pendingRequests, gpuUtilization: per-pod target in the "
                                           "metric's unit (default 50000 us, 4 requests, 70 percent).")
    target_utilization: int = Field(default=80, ge=10, le=100,
                                    description="requestRate, concurrency: percent of one replica's capacity "
                                                "each pod is aimed at.")
    capacity: Capacity = Field(default_factory=Capacity, description="One replica's capacity at the SLO.")
    predictive: Predictive = Field(default_factory=Predictive,
                                   description="A floor forecast from the request-rate history in Prometheus.")
    readiness_horizon_seconds: int = Field(
        default=86400, ge=0, le=30 * 86400,
        description="How long before a schedule's start PromotionReady checks that its floor fits the free GPUs.")
    scale_up: ScalingRules = Field(
        default_factory=ScalingRules,
        description="How fast to add replicas. Defaults: no stabilization, up to 4 pods or 100% per 15s.")
    scale_down: ScalingRules = Field(
        default_factory=ScalingRules,
        description="How fast to remove replicas. Defaults: 300s stabilization, 1 pod or 10% per 60s.")
    engine: Literal["auto", "hpa", "keda"] = Field(
        default="auto",
        description="hpa: an autoscaling/v2 HPA on metrics a prometheus-adapter serves; keda: a KEDA ScaledObject "
                    "with Prometheus and cron triggers; auto: keda when the cluster serves ScaledObjects.")
    prometheus_address: str = Field(default=DEFAULT_PROMETHEUS, min_length=1, max_length=512,
                                    pattern=r"^https?://[^@?#\s]+$",
                                    description="Prometheus that scrapes the Triton pods: KEDA's triggers, capacity "
                                                "learning and the predictive floor query it.")
    schedules: list[PromotionSchedule] = Field(
        default_factory=list, max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Announced promotions: the replica floor rises lead time before each start.")
    lead_time_seconds: int | None = Field(
        default=None, ge=0, le=86400,
        description="How long before a schedule's start the floor rises. Default: the measured pod start and "
                    "model load time plus the metric pipeline delay (600 s until a start was measured).")
    headroom: Headroom | None = Field(default=None, description="Warm GPU placeholders, preempted by Triton pods.")

    def target_value(self) -> int:
        """The target of a metric that is not a capacity metric: the spec's, else the metric's default."""
        return self.target if self.target is not None else DEFAULT_TARGETS[self.metric]


class SourceFormat(str, Enum):
    torchscript = "torchscript"
    pytorch = "pytorch"
    onnx = "onnx"


class BuildSource(Spec):
    """The model to build from, and the data its gates are measured on. Paths are relative to uri."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.format != 'pytorch' || has(self.factory)", "format pytorch needs factory (module.py:function)",
         ".factory"),
        ("!self.uri.startsWith('s3://')", "build.source.uri must be pvc://CLAIM/PATH or an absolute path",
         ".uri"),
        ("self.calibrationData != self.evaluationData",
         "calibrationData and evaluationData must be different files (the gate needs held-out data)",
         ".evaluationData"),
    ))

    uri: str = Field(min_length=1, max_length=1024, pattern=URI_PATTERN,
                     description="Directory holding the model and its data: pvc://CLAIM/PATH, "
                                 "or an absolute path for local builds.")
    format: SourceFormat = Field(default=SourceFormat.torchscript,
                                 description="torchscript (a scripted/traced .pt), pytorch (a module factory "
                                             "plus a state dict) or onnx (an fp32 .onnx).")
    file: str = Field(default="model.pt", min_length=1, max_length=253, pattern=r"^[^/][^@?#]*$",
                      description="Model file: the TorchScript archive, the state dict, or the .onnx file.")
    factory: str | None = Field(default=None, max_length=253, pattern=r"^[^/][^:]*\.py:[A-Za-z_][A-Za-z0-9_]*$",
                                description="For format pytorch: FILE.py:FUNCTION returning the torch.nn.Module "
                                            "the state dict loads into.")
    calibration_data: str = Field(default="calibration.npz", max_length=253, pattern=r"^[^/][^@?#]*\.npz$",
                                  description="Calibration inputs (.npz, one array per input tensor) for static "
                                              "int8. Never replaced by random data.")
    evaluation_data: str = Field(default="evaluation.npz", max_length=253, pattern=r"^[^/][^@?#]*\.npz$",
                                 description="Held-out inputs for the accuracy gate, disjoint from the calibration "
                                             "set; rankers add a `label` array (0/1 clicks).")


class Task(str, Enum):
    ranker = "ranker"
    embedding = "embedding"
    generic = "generic"


class Candidate(str, Enum):
    int8Dynamic = "int8Dynamic"
    int8Static = "int8Static"
    fp16 = "fp16"


class Gates(Spec):
    """Thresholds a candidate must meet against the fp32 reference on the evaluation set."""

    export_tolerance: float = Field(default=1e-4, gt=0, le=1,
                                    description="Largest |torch - ONNX fp32| allowed for the export itself.")
    max_abs_diff: float = Field(default=0.05, gt=0, description="Largest |candidate - fp32| over all outputs.")
    p99_abs_diff: float = Field(default=0.02, gt=0, description="99th percentile of |candidate - fp32|.")
    min_cosine: float = Field(default=0.99, ge=-1, le=1,
                              description="embedding: smallest cosine similarity of an output row to fp32.")
    k: int = Field(default=10, ge=1, le=1000, description="k for recall@k and top-k agreement.")
    min_recall_at_k: float = Field(default=0.9, ge=0, le=1,
                                   description="embedding: mean overlap of each query's k nearest neighbours "
                                               "(candidate vs fp32).")
    max_auc_drop: float = Field(default=0.005, ge=0, le=1, description="ranker: largest AUC loss vs fp32.")
    max_logloss_increase: float = Field(default=0.01, ge=0, description="ranker: largest logloss gain vs fp32.")
    min_top_k_agreement: float = Field(default=0.9, ge=0, le=1,
                                       description="ranker: overlap of the k best-scored items, candidate vs fp32.")
    min_speedup: float = Field(default=1.1, gt=0, le=1000,
                               description="Speed gate: geometric mean over the batch sizes of the candidate's "
                                           "throughput / fp32 throughput, measured side by side in one run.")
    min_batch_speedup: float = Field(default=0.9, gt=0, le=1000,
                                     description="Speed gate: no batch size may fall below this fraction of "
                                                 "fp32 throughput.")


class ArtifactStore(Spec):
    """Where built Triton model repositories are published, one directory per build hash."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
         "credentialsSecret applies only to s3:// URIs", ".credentialsSecret"),
    ))

    uri: str = Field(min_length=1, max_length=1024, pattern=URI_PATTERN,
                     description="pvc://CLAIM/PREFIX (writable by the build Job and readable by Triton), "
                                 "s3://BUCKET/PREFIX, or an absolute path for local builds.")
    credentials_secret: str | None = Field(
        default=None, max_length=253, pattern=OBJECT_NAME_PATTERN,
        description="Secret whose keys become environment variables of the uploader and the fetcher "
                    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).")


class BuildSpec(Spec):
    """Build the served model: torch -> ONNX -> int8/fp16 candidates, gated on accuracy and speed.
    The Triton Deployment moves to a new artifact only after its build passed."""

    source: BuildSource = Field(description="The model and data to build from.")
    task: Task = Field(default=Task.generic,
                       description="Selects the accuracy metrics: ranker (AUC, logloss, top-k), embedding "
                                   "(cosine, recall@k) or generic (output differences only).")
    candidates: list[Candidate] = Field(
        default_factory=lambda: [Candidate.int8Dynamic, Candidate.int8Static, Candidate.fp16],
        max_length=3, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Optimizations to try. fp16 is tried only for GPU serving on a GPU build.")
    batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=list, max_length=8,
        description="Batch sizes of the speed gate; each must be <= model.maxBatchSize. "
                    "Empty: 1, 32 and model.maxBatchSize.")
    gates: Gates = Field(default_factory=Gates, description="Accuracy and speed thresholds.")
    allow_fp32_fallback: bool = Field(
        default=True, description="When no candidate passes, serve fp32. false: fail the build instead, "
                                  "and keep serving the previous artifact.")
    artifacts: ArtifactStore = Field(description="Where the built model repository is published.")
    image: str = Field(default=DEFAULT_BUILDER_IMAGE, min_length=1, max_length=512,
                       description="Model builder image (images/model-builder).")
    gpus: int = Field(default=0, ge=0, le=8,
                      description="GPUs for the build Job; fp16 and GPU speed figures need one.")
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(requests={"cpu": "4", "memory": "8Gi"},
                                                     limits={"memory": "8Gi"}),
        description="CPU and memory of the build Job.")
    timeout_seconds: int = Field(default=3600, ge=60, le=86400,
                                 description="The build Job's activeDeadlineSeconds.")


class ModelDeploymentSpec(Spec):
    """A model served by Triton Inference Server on GPU nodes."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("has(self.model.uri) != has(self.build)",
         "set exactly one of model.uri (a ready model) and build (peakserve builds it)", ".model"),
        ("!has(self.build) || self.model.format == 'onnx'",
         "a build produces ONNX: model.format must be onnx", ".model.format"),
        ("!has(self.build) || self.build.batchSizes.all(b, b <= self.model.maxBatchSize)",
         "build.batchSizes must be <= model.maxBatchSize", ".build.batchSizes"),
    ))

    model: ModelSpec = Field(description="The model to serve.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="How Triton runs.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Replicas when autoscaling is not set.")
    autoscaling: AutoscalingSpec | None = Field(default=None,
                                                description="Scale on Triton load metrics instead of a fixed count.")
    build: BuildSpec | None = Field(default=None,
                                    description="Build and gate the served model before any rollout.")

    def build_batch_sizes(self) -> list[int]:
        """The speed gate's batch sizes: as given, or 1, 32 and the largest batch Triton will form."""
        largest = max(self.model.max_batch_size, 1)
        sizes = (self.build.batch_sizes if self.build else []) or [1, 32, largest]
        return sorted({min(size, largest) for size in sizes})


class Condition(Spec):
    """A status condition, following the Kubernetes API conventions."""

    type: str = Field(description="Ready, Progressing or Degraded; BuildSucceeded with a build; PromotionReady "
                                  "with promotion schedules (the next one's floor fits the free GPUs).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word that machines can match on.")
    message: str = Field(default="", description="What happened, for people.")
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"},
                                      description="When status last changed.")
    observed_generation: int = Field(default=0, description="The spec generation this condition describes.")


class Endpoint(Spec):
    """Where clients reach the model inside the cluster."""

    http: str = Field(description="KServe v2 HTTP/REST base URL.")
    grpc: str = Field(description="KServe v2 gRPC address.")


class BuildStatus(Spec):
    """The build of the current spec, and the build that is serving."""

    hash: str = Field(description="Content hash of the model and build spec; the build Job is named after it.")
    job: str | None = Field(default=None, description="The build Job.")
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = Field(description="Where the build is.")
    reason: str | None = Field(default=None, description="Why it ended that way, one CamelCase word.")
    message: str | None = Field(default=None, description="What happened, for people.")
    precision: str | None = Field(default=None, description="Precision chosen by the gates.")
    candidate: str | None = Field(default=None, description="Chosen candidate (fp32, int8Dynamic, int8Static, fp16).")
    artifact: str | None = Field(default=None, description="Published model repository (credentials removed).")
    digest: str | None = Field(default=None, description="sha256 of the served model.onnx.")
    figures: dict[str, float] = Field(default_factory=dict,
                                      description="Gate figures of the chosen candidate (speedup, maxAbsDiff, ...).")
    rejected: dict[str, str] = Field(default_factory=dict, description="Why each other candidate was not chosen.")
    serving_hash: str | None = Field(default=None, description="The build hash the Triton pods run now.")


class CapacityStatus(Spec):
    """One replica's capacity at the SLO, and where it comes from."""

    source: Literal["spec", "learned", "unknown"] = Field(
        description="spec: spec.autoscaling.capacity; learned: from Prometheus; unknown: neither yet.")
    requests_per_second: float | None = Field(default=None, description="Requests/s per replica at the SLO.")
    concurrency: float | None = Field(default=None, description="Requests in flight per replica at that rate.")
    samples: int | None = Field(default=None, description="5-minute per-pod windows it was learned from.")
    within_slo: int | None = Field(default=None, description="Of those, the windows whose mean latency met the SLO.")
    learned_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                   description="When it was last learned.")
    message: str | None = Field(default=None, description="How it was obtained, or why it is not known.")


class PredictiveStatus(Spec):
    """The forecast floor: what was forecast, from how much history, and how wrong it has been."""

    floor: int | None = Field(default=None, description="Replicas the forecast asks for (0: none).")
    forecast_requests_per_second: float | None = Field(default=None,
                                                       description="Highest forecast rate of the next window.")
    window_seconds: int | None = Field(default=None,
                                       description="Length of the forecast window: the lead time plus 300 s.")
    history_hours: float | None = Field(default=None, description="History the forecast was made from.")
    mape_percent: float | None = Field(default=None,
                                       description="Mean absolute percentage error of the forecast over the last "
                                                   "day of history (backtested).")
    evaluated_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                     description="When the forecast was made.")
    message: str | None = Field(default=None, description="What the forecast did, or why it did nothing.")


class PromotionReadiness(Spec):
    """Whether the next promotion's floor fits the free GPUs of its product."""

    schedule: str = Field(description="The promotion checked.")
    needed_gpus: int = Field(description="Floor x GPUs per replica.")
    free_gpus: int = Field(description="Allocatable GPUs of the product minus what other pods hold (headroom "
                                       "placeholders and this model's own pods count as free).")


class AutoscalingStatus(Spec):
    """The replica floor the operator set, and why."""

    metric: str | None = Field(default=None, description="The metric the autoscaler scales on now.")
    target: str | None = Field(default=None, description="Its per-pod target now, with its unit.")
    capacity: CapacityStatus | None = Field(default=None, description="Capacity per replica (capacity metrics).")
    predictive: PredictiveStatus | None = Field(default=None, description="The predictive floor.")
    promotion: PromotionReadiness | None = Field(default=None, description="The next promotion's GPU check.")

    engine: str | None = Field(default=None, description="hpa or keda.")
    floor: int | None = Field(default=None, description="The minReplicas in force now.")
    active_schedule: str | None = Field(default=None, description="The promotion holding the floor up now.")
    next_schedule: str | None = Field(default=None, description="The next promotion.")
    next_change: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                    description="When the floor changes next (UTC).")
    lead_time_seconds: int | None = Field(default=None, description="Lead time in use.")
    measured_startup_seconds: int | None = Field(default=None,
                                                 description="Longest observed pod start to Ready.")


class AnalysisResult(Spec):
    """One analysis of the canary against stable."""

    step: int = Field(description="Index of the step analysed (0 for a rollout without steps).")
    passed: bool = Field(description="Whether every check passed.")
    reason: str | None = Field(default=None, description="Why it failed, one CamelCase word.")
    message: str | None = Field(default=None, description="The failing figures, or a summary.")
    figures: dict[str, float] = Field(default_factory=dict,
                                      description="Error rates, latencies, queue times and probe figures.")
    job: str | None = Field(default=None, description="The analysis Job.")


class RolloutStatus(Spec):
    """Where the canary is: the pod templates (by hash), the step, the analyses and the last verdict."""

    phase: Literal["Stable", "Held", "Canary", "Promoting", "RolledBack"] = Field(
        description="Stable: nothing to roll out. Held: a check or a freeze stops the rollout. Canary: the "
                    "canary serves beside stable. Promoting: the stable pods take the new template. "
                    "RolledBack: the canary was removed; stable serves.")
    stable_hash: str | None = Field(default=None, description="Pod-template hash of the stable pods.")
    canary_hash: str | None = Field(default=None, description="Pod-template hash being rolled out.")
    step: int | None = Field(default=None, description="Current step index.")
    weight: int | None = Field(default=None, description="Canary share of the serving pods now, in percent.")
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                   description="When the canary was created.")
    step_started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                        description="When the current step began (its progress deadline "
                                                    "counts from here).")
    ready_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                 description="When the current step's canary pods were all Ready (its pause "
                                             "counts from here).")
    reason: str | None = Field(default=None, description="Why the rollout is held or was rolled back.")
    message: str | None = Field(default=None, description="What happened, for people.")
    made_room: int | None = Field(default=None, description="Stable pods stopped so that the canary's could "
                                                             "be scheduled (no free GPU for a surge); restored at "
                                                             "promotion or rollback.")
    failed_hash: str | None = Field(default=None, description="Pod-template hash whose rollout failed; "
                                                               "not retried until the spec changes.")
    failed_generation: int | None = Field(default=None, description="The generation that failed.")
    analyses: list[AnalysisResult] = Field(default_factory=list, max_length=16,
                                           description="Analyses of the current (or last) canary.")


class ModelDeploymentStatus(Spec):
    """What peakserve observed, written by the operator only."""

    observed_generation: int | None = Field(default=None, description="Last spec generation acted on.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded; with spec.build, BuildSucceeded; with promotion schedules, "
                    "PromotionReady.")
    replicas: int | None = Field(default=None, description="Triton pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Triton pods that are ready to serve.")
    updated_replicas: int | None = Field(default=None, description="Pods already on the current spec.")
    endpoint: Endpoint | None = Field(default=None, description="In-cluster serving endpoint.")
    build: BuildStatus | None = Field(default=None, description="The model build, when spec.build is set.")
    autoscaling: AutoscalingStatus | None = Field(default=None, description="Floor and promotion schedules.")
    rollout: RolloutStatus | None = Field(default=None, description="The canary rollout.")
    precision: str | None = Field(default=None, description="Precision the Triton pods serve: the passed build's "
                                                             "choice, or spec.model.precision without a build.")
