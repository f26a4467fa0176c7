"""The analysis Job of one canary step: `peakserve analyze` in the model-builder image.

It runs where the heavy parts are (numpy, the Triton client, the probe data in model storage), not in
the operator. It sends the same probe batch to a stable and a canary pod, reads both sides' Triton
metrics from Prometheus, and writes its verdict (JSON) to the termination message, which the operator
records on the Job, exactly like a build result.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from ..api.spec import DEFAULT_BUILDER_IMAGE, ModelDeploymentSpec, RolloutAnalysis
from . import names
from .build_job import BUILDER_UID, uri_volume, volume_mount
from .deployment import HTTP_PORT, container_security
from .owner import Owner

PROBE_DIR = "/probe"
PROBE_FILE = "probe.npz"   # what a build writes into the model version directory
ANNOTATION_ANALYSIS_RESULT = "peakserve.io/analysis-result"


@dataclass(frozen=True)
class AnalysisTarget:
    """What one analysis compares: the Ready pods' IPs of each side, and where the probe data is."""

    template_hash: str
    step: int
    stable_ips: tuple[str, ...]
    canary_ips: tuple[str, ...]
    probe_uri: str | None  # a .npz (pvc://CLAIM/PATH or a node path); None: no probe comparison


def probe_uri(spec: ModelDeploymentSpec, analysis: RolloutAnalysis, served_uri: str) -> str | None:
    """The probe data: the spec's dataUri, else the probe.npz a build wrote beside the served model."""
    if not analysis.probe.enabled:
        return None
    if analysis.probe.data_uri:
        return analysis.probe.data_uri
    if spec.build is not None and not served_uri.startswith("s3://"):
        return posixpath.join(served_uri, PROBE_FILE)
    return None


def _probe_volume(uri: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Volume, mount and in-pod path of the probe file: its directory, mounted read-only at PROBE_DIR."""
    directory, filename = posixpath.split(uri)
    volume, sub_path = uri_volume("probe", directory, read_only=True)
    return volume, volume_mount("probe", PROBE_DIR, sub_path, read_only=True), posixpath.join(PROBE_DIR, filename)


def _pod_regex(deployment: str) -> str:
    """Prometheus `pod` label of a Deployment's pods: NAME-<replicaset hash>-<suffix>."""
    return f"{deployment}-[a-z0-9]+-[a-z0-9]+"


def render_analysis_job(owner: Owner, spec: ModelDeploymentSpec, analysis: RolloutAnalysis,
                        target: AnalysisTarget) -> dict[str, Any]:
    name = names.analysis_job_name(owner.name, target.template_hash, target.step)
    args = ["--model", spec.model.name, "--version", str(spec.model.version),
            "--namespace", owner.namespace,
            "--stable-pods", _pod_regex(names.child_name(owner.name)),
            "--canary-pods", _pod_regex(names.canary_name(owner.name)),
            "--prometheus", analysis.prometheus_address,
            "--thresholds", json.dumps(analysis.model_dump(mode="json", by_alias=True), sort_keys=True,
                                       separators=(",", ":"))]
    for flag, ips in (("--stable", target.stable_ips), ("--canary", target.canary_ips)):
        for ip in ips:
            args += [flag, f"{ip}:{HTTP_PORT}"]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if target.probe_uri:
        volume, mount, path = _probe_volume(target.probe_uri)
        volumes.append(volume)
        mounts.append(mount)
        args += ["--probe", path]
    container = {
        "name": "analyze",
        "image": spec.build.image if spec.build else DEFAULT_BUILDER_IMAGE,
        "command": ["peakserve", "analyze"],
        "args": args + ["--result-file", "/dev/termination-log"],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    labels = {**names.build_labels(owner.name, target.template_hash),
              "app.kubernetes.io/component": names.ANALYSIS_COMPONENT}
    labels.pop(names.LABEL_BUILD_HASH)
    meta = owner.metadata(name)
    meta["labels"] = labels
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": BUILDER_UID, "runAsGroup": BUILDER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {
        "backoffLimit": 0,   # a verdict is not retried; an analysis that cannot run fails the step
        "activeDeadlineSeconds": 600,
        "ttlSecondsAfterFinished": 86400,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }}
