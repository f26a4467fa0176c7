"""A small valid ModelDeployment for the local control plane (tests, benchmarks)."""

from __future__ import annotations

import copy
from typing import Any

_SMALL_SPEC: dict[str, Any] = {
    "model": {
        "name": "ranker",
        "uri": "/var/lib/peakserve/models/ranker/1",  # hostPath: KWOK never mounts it
        "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}],
    },
    "serving": {"gpus": 1, "gpuProduct": "NVIDIA-A10"},
    "replicas": 1,
}


def small_spec(cpu: str = "1", memory: str = "2Gi") -> dict[str, Any]:
    spec = copy.deepcopy(_SMALL_SPEC)
    spec["serving"]["resources"] = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}
    return spec


def model_deployment(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
