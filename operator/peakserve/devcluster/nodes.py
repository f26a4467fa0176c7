"""Simulated GPU nodes. KWOK keeps them Ready and runs the pods the scheduler binds to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.spec import GPU_PRODUCT_LABEL

KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


@dataclass(frozen=True)
class GpuNode:
    name: str
    product: str
    gpus: int
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"


# Two products, so tests can prove the product selector and the GPU count both matter.
DEFAULT_NODES = (
    GpuNode("gpu-a10-0", "NVIDIA-A10", 4, cpu="48", memory="192Gi"),
    GpuNode("gpu-a10-1", "NVIDIA-A10", 4, cpu="48", memory="192Gi"),
    GpuNode("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 8, cpu="192", memory="2Ti"),
)


def node_manifest(node: GpuNode) -> dict[str, Any]:
    capacity = {"cpu": node.cpu, "memory": node.memory, "pods": node.pods, "nvidia.com/gpu": str(node.gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                GPU_PRODUCT_LABEL: node.product,
                "nvidia.com/gpu.count": str(node.gpus),
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"}},
    }
