"""The identity of a build: a content hash of everything that changes the built artifact.

The operator names the build Job after it and the builder publishes under it, so the same
spec always maps to the same Job and the same artifact directory: that is the build cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .spec import ModelDeploymentSpec

HASH_LEN = 12


def build_inputs(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The spec fields a build depends on. Replicas, placement and autoscaling do not change the artifact."""
    if spec.build is None:
        raise ValueError("spec.build is not set")
    model = spec.model.model_dump(mode="json", by_alias=True, exclude={"uri", "precision", "credentials_secret"})
    serving = spec.serving.model_dump(mode="json", by_alias=True, include={"gpus", "instance_groups", "dynamic_batching"})
    # The artifact store is where the result goes, not what it is; the image is the toolchain and counts.
    build = spec.build.model_dump(mode="json", by_alias=True, exclude={"artifacts", "resources"})
    # No peakserve version here: the operator and the builder image must agree on the hash, and the
    # image (the toolchain, versioned by its tag) is already part of `build`.
    return {"model": model, "serving": serving, "build": build}


def build_hash(spec: ModelDeploymentSpec) -> str:
    canonical = json.dumps(build_inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LEN]
