"""OCI image documents (config, manifest, index) as plain dicts, and their canonical bytes.

Pure functions: everything a writer needs to know about the OCI image spec lives here, so that it can
be unit-tested without building anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image after this annotation (ctr images import); the OCI ref.name alone
# is treated as a tag relative to --base-name by some versions, so both are written.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes a document is stored (and hashed) as: sorted keys, no spaces."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, digest: str, size: int,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        d["annotations"] = dict(annotations)
    return d


@dataclass(frozen=True)
class RunConfig:
    """What a Dockerfile's ENV/ENTRYPOINT/CMD/WORKDIR/USER/EXPOSE/LABEL set; the OCI ``config`` object."""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "8000/tcp"
    labels: dict[str, str] = field(default_factory=dict)

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.workdir:
            out["WorkingDir"] = self.workdir
        if self.labels:
            out["Labels"] = dict(self.labels)
        return out


def image_config(run: RunConfig, diff_ids: list[str], history: list[str], *,
                 created: str = "1970-01-01T00:00:00Z") -> dict[str, Any]:
    """The image configuration blob. One history entry per layer, in order (``created_by`` text).

    ``created`` defaults to the epoch so that the same inputs give the same config digest.
    """
    if len(history) != len(diff_ids):
        raise ValueError(f"{len(history)} history entries for {len(diff_ids)} layers")
    return {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": run.to_oci(),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": created, "created_by": h} for h in history],
    }


def manifest(config_desc: dict[str, Any], layer_descs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc,
            "layers": list(layer_descs)}


def name_annotations(name: str) -> dict[str, str]:
    return {ANNOTATION_CONTAINERD_NAME: name, ANNOTATION_REF_NAME: name}


def index(manifest_desc: dict[str, Any]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest_desc]}


def env_with_path(env: list[str] | tuple[str, ...], prepend: str) -> list[str]:
    """``env`` with ``prepend`` put first on its PATH (as ``ENV PATH="X:${PATH}"`` does)."""
    out, found = [], False
    for item in env:
        if item.startswith("PATH="):
            item, found = f"PATH={prepend}:{item[5:]}", True
        out.append(item)
    if not found:
        out.append(f"PATH={prepend}")
    return out
