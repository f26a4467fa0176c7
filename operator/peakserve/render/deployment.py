"""The Triton Deployment: GPUs, probes, ports, a restricted pod, and a GPU-safe rollout."""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from typing import Any

from ..api.spec import DEFAULT_S3_FETCH_IMAGE, GPU_PRODUCT_LABEL, ModelDeploymentSpec
from . import names
from .owner import Owner

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODEL_ROOT = "/models"
TRITON_UID = 1000  # the triton-server user of the NGC Triton images
PROBE_PERIOD = 10


def gpu_toleration() -> dict[str, Any]:
    return {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def container_security() -> dict[str, Any]:
    """Fresh each call: rendered manifests must never share (and so co-mutate) nested objects."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
            "timeoutSeconds": 5, "failureThreshold": failures}


def claim_and_path(uri: str) -> tuple[str, str]:
    """pvc://CLAIM/PATH -> (CLAIM, PATH); PATH may be empty."""
    claim, _, sub_path = uri.removeprefix("pvc://").partition("/")
    return claim, sub_path


def claim_of(uri: str) -> str:
    return claim_and_path(uri)[0]


def _model_source(spec: ModelDeploymentSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """Volumes, triton mounts and init containers that place the model at /models/NAME/VERSION."""
    model = spec.model
    target = posixpath.join(MODEL_ROOT, model.name, str(model.version))
    if model.uri.startswith("pvc://"):
        claim, sub_path = claim_and_path(model.uri)
        volume = {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {"name": "model-source", "mountPath": target, "readOnly": True}
        if sub_path:
            mount["subPath"] = sub_path
        return [volume], [mount], []
    if model.uri.startswith("s3://"):
        fetch = {
            "name": "fetch-model",
            "image": DEFAULT_S3_FETCH_IMAGE,
            "command": ["aws", "s3", "cp", "--recursive", "--only-show-errors", model.uri, target],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": container_security(),
            "volumeMounts": [{"name": "models", "mountPath": MODEL_ROOT}, {"name": "tmp", "mountPath": "/tmp"}],
        }
        if model.credentials_secret:
            fetch["envFrom"] = [{"secretRef": {"name": model.credentials_secret}}]
        return [], [], [fetch]
    volume = {"name": "model-source", "hostPath": {"path": model.uri, "type": "Directory"}}
    return [volume], [{"name": "model-source", "mountPath": target, "readOnly": True}], []


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    serving = spec.serving
    requests, limits = dict(serving.resources.requests), dict(serving.resources.limits)
    if serving.gpus > 0:  # extended resources must have request == limit
        requests[serving.gpu_resource] = serving.gpus
        limits[serving.gpu_resource] = serving.gpus
    return {"requests": requests, "limits": limits}


def _triton_args(spec: ModelDeploymentSpec) -> list[str]:
    return [
        f"--model-repository={MODEL_ROOT}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if spec.serving.gpus > 0 else 'false'}",
        *spec.serving.extra_args,
    ]


def _pod_spec(owner: Owner, spec: ModelDeploymentSpec, config_map: str) -> dict[str, Any]:
    serving, model = spec.serving, spec.model
    volumes, source_mounts, init_containers = _model_source(spec)
    config_mount = {"name": "triton-config", "mountPath": posixpath.join(MODEL_ROOT, model.name, "config.pbtxt"),
                    "subPath": "config.pbtxt", "readOnly": True}
    triton = {
        "name": "triton",
        "image": serving.image,
        "imagePullPolicy": serving.image_pull_policy,
        "command": ["tritonserver"],
        "args": _triton_args(spec),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec),
        # Ready only once the model has loaded; sized so a slow load is not killed mid-way.
        "startupProbe": _probe("/v2/health/ready", PROBE_PERIOD,
                               math.ceil(serving.startup_timeout_seconds / PROBE_PERIOD)),
        # Live stays true while Triton loads models, so a long load never triggers a restart.
        "livenessProbe": _probe("/v2/health/live", PROBE_PERIOD, 3),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_ROOT},
            *source_mounts,
            config_mount,
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    node_selector = dict(serving.node_selector)
    if serving.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = serving.gpu_product
    tolerations = [gpu_toleration()] if serving.gpus > 0 else []
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in serving.tolerations]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # Triton never talks to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
                            "fsGroup": TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": init_containers,
        "containers": [triton],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            *volumes,
            {"name": "triton-config", "configMap": {"name": config_map}},
            {"name": "tmp", "emptyDir": {}},
            # The python backend and large batches need more shared memory than the 64Mi default.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        ],
        "nodeSelector": node_selector,
        "tolerations": tolerations,
    }
    if not init_containers:
        del pod["initContainers"]
    optional = {"affinity": serving.affinity, "priorityClassName": serving.priority_class_name}
    pod.update({k: v for k, v in optional.items() if v})
    if serving.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in serving.image_pull_secrets]
    return pod


def pod_template(owner: Owner, spec: ModelDeploymentSpec, config_hash: str, build_hash: str | None,
                 track: str = names.STABLE) -> dict[str, Any]:
    config_map = names.config_map_name(owner.name) if track == names.STABLE else names.canary_config_map_name(owner.name)
    return {
        "metadata": {"labels": {**names.common_labels(owner.name), names.LABEL_TRACK: track},
                     "annotations": {names.ANNOTATION_MD: owner.name,
                                     names.ANNOTATION_CONFIG_HASH: config_hash,
                                     **({names.ANNOTATION_BUILD_HASH: build_hash} if build_hash else {})}},
        "spec": _pod_spec(owner, spec, config_map),
    }


def template_hash(template: dict[str, Any]) -> str:
    """Identity of a stable-track pod template: what a rollout rolls out, and what a verdict is about."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def progress_deadline(spec: ModelDeploymentSpec) -> int:
    """A rollout is stuck only after the pods have had their full model-load time."""
    return spec.serving.rollout.progress_deadline_seconds or spec.serving.startup_timeout_seconds + 300


def _strategy(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The stable side takes a new template only after a Ready canary: the canary's pods are the surge,
    so by default one stable pod is replaced at a time and no extra GPU is asked for."""
    rollout = spec.serving.rollout
    surge = rollout.max_surge if rollout.max_surge is not None else 0
    unavailable = rollout.max_unavailable if rollout.max_unavailable is not None else (0 if surge else 1)
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def render_deployment(owner: Owner, spec: ModelDeploymentSpec, config_hash: str,
                      build_hash: str | None = None) -> dict[str, Any]:
    """The stable Deployment."""
    child = names.child_name(owner.name)
    template = pod_template(owner, spec, config_hash, build_hash)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": names.selector_labels(owner.name)},
        "strategy": _strategy(spec),
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": progress_deadline(spec),
        "template": template,
    }
    if spec.autoscaling is None:  # with an HPA, replicas belong to the HPA alone
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    metadata = owner.metadata(child, {names.ANNOTATION_TEMPLATE_HASH: template_hash(template)})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": deployment_spec}


def render_canary(owner: Owner, spec: ModelDeploymentSpec, config_hash: str, build_hash: str | None,
                  replicas: int) -> dict[str, Any]:
    """The canary Deployment: the new template beside stable, behind the same Service (its pods carry the
    serving selector label), with a selector of its own so the two Deployments never adopt each other's pods."""
    stable_template = pod_template(owner, spec, config_hash, build_hash)
    metadata = owner.metadata(names.canary_name(owner.name),
                              {names.ANNOTATION_TEMPLATE_HASH: template_hash(stable_template)})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": names.track_labels(owner.name, names.CANARY)},
        "revisionHistoryLimit": 1,
        "progressDeadlineSeconds": progress_deadline(spec),
        "template": pod_template(owner, spec, config_hash, build_hash, names.CANARY),
    }}
