"""The model build Job: one per build hash, so a restarted operator can never start a second one.

The builder writes its result (JSON) to the container's termination message; the operator reads it
from the pod and records it on the Job. The Job is the build cache: the same spec, the same Job.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from ..api.spec import DEFAULT_S3_FETCH_IMAGE, ModelDeploymentSpec
from . import names
from .deployment import claim_and_path, container_security, gpu_toleration
from .owner import Owner

SOURCE_DIR, OUT_DIR = "/source", "/artifacts"
BUILDER_UID = 65532
DETERMINISTIC_FAILURE = 3   # the builder's exit code for bad input or failed gates: retrying cannot help


def artifact_uri(spec: ModelDeploymentSpec, build_hash: str) -> str:
    """Where Triton finds the built model version: STORE/HASH/MODEL/VERSION."""
    store = spec.build.artifacts.uri.rstrip("/")
    return f"{store}/{build_hash}/{spec.model.name}/{spec.model.version}"


def uri_volume(name: str, uri: str, read_only: bool) -> tuple[dict[str, Any], str | None]:
    """A volume for a pvc:// or host path URI, and the subPath inside it."""
    if uri.startswith("pvc://"):
        claim, sub_path = claim_and_path(uri)
        return {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}, sub_path or None
    kind = "Directory" if read_only else "DirectoryOrCreate"
    return {"name": name, "hostPath": {"path": uri, "type": kind}}, None


def volume_mount(name: str, path: str, sub_path: str | None, read_only: bool) -> dict[str, Any]:
    mount = {"name": name, "mountPath": path, "readOnly": read_only}
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    build = spec.build
    requests, limits = dict(build.resources.requests), dict(build.resources.limits)
    if build.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = build.gpus
    return {"requests": requests, "limits": limits}


def _builder(spec: ModelDeploymentSpec, source_mount: dict[str, Any], out_mount: dict[str, Any]) -> dict[str, Any]:
    spec_json = json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                           sort_keys=True, separators=(",", ":"))
    return {
        "name": "build",
        "image": spec.build.image,
        "command": ["peakserve", "build"],
        "args": ["--spec-json", spec_json, "--source", SOURCE_DIR, "--out", OUT_DIR,
                 "--result-file", "/dev/termination-log"],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "resources": _resources(spec),
        # A crash before the result is written still explains itself through the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
        "volumeMounts": [source_mount, out_mount, {"name": "tmp", "mountPath": "/tmp"}],
    }


def render_build_job(owner: Owner, spec: ModelDeploymentSpec, build_hash: str) -> dict[str, Any]:
    build = spec.build
    source_volume, source_sub = uri_volume("source", build.source.uri, read_only=True)
    volumes = [source_volume, {"name": "tmp", "emptyDir": {}}]
    source_mount = volume_mount("source", SOURCE_DIR, source_sub, read_only=True)
    store = build.artifacts.uri
    init_containers: list[dict[str, Any]] = []
    if store.startswith("s3://"):
        # Build into the pod, then upload: the termination message comes from the build init container.
        volumes.append({"name": "artifacts", "emptyDir": {}})
        builder = _builder(spec, source_mount, volume_mount("artifacts", OUT_DIR, None, read_only=False))
        upload = {
            "name": "upload",
            "image": DEFAULT_S3_FETCH_IMAGE,
            "command": ["aws", "s3", "cp", "--recursive", "--only-show-errors",
                        posixpath.join(OUT_DIR, build_hash), f"{store.rstrip('/')}/{build_hash}"],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": container_security(),
            "volumeMounts": [{"name": "artifacts", "mountPath": OUT_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }
        if build.artifacts.credentials_secret:
            upload["envFrom"] = [{"secretRef": {"name": build.artifacts.credentials_secret}}]
        init_containers, containers = [builder], [upload]
    else:
        out_volume, out_sub = uri_volume("artifacts", store, read_only=False)
        volumes.append(out_volume)
        containers = [_builder(spec, source_mount, volume_mount("artifacts", OUT_DIR, out_sub, read_only=False))]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the builder never talks to the API server
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": BUILDER_UID, "runAsGroup": BUILDER_UID,
                            "fsGroup": BUILDER_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers,
        "volumes": volumes,
    }
    if init_containers:
        pod["initContainers"] = init_containers
    if build.gpus:
        pod["tolerations"] = [gpu_toleration()]
    labels = names.build_labels(owner.name, build_hash)
    meta = owner.metadata(names.build_job_name(owner.name, build_hash),
                          extra_annotations={names.ANNOTATION_BUILD_HASH: build_hash})
    meta["labels"] = labels
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": build.timeout_seconds,
            # Bad input and failed gates are final; only crashes (OOM, eviction) are worth a retry.
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "build", "operator": "In", "values": [DETERMINISTIC_FAILURE]}}]},
            "template": {"metadata": {"labels": dict(labels),
                                      "annotations": {names.ANNOTATION_BUILD_HASH: build_hash}},
                         "spec": pod},
        },
    }
