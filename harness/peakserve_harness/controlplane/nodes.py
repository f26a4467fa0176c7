"""Simulated GPU nodes. KWOK keeps them Ready and runs the pods the scheduler binds to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peakserve.api.spec import GPU_PRODUCT_LABEL

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
    # Untainted, for system workloads such as the operator itself (Helm tests install it).
    GpuNode("cpu-0", "", 0, cpu="16", memory="64Gi"),
)


def node_manifest(node: GpuNode) -> dict[str, Any]:
    """A KWOK-managed Node. GPU nodes carry the labels GPU feature discovery sets and the GPU taint."""
    capacity = {"cpu": node.cpu, "memory": node.memory, "pods": node.pods}
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    taints = []
    if node.gpus > 0:
        capacity["nvidia.com/gpu"] = str(node.gpus)
        labels.update({GPU_PRODUCT_LABEL: node.product, "nvidia.com/gpu.count": str(node.gpus),
                       "nvidia.com/gpu.present": "true"})
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]}, "labels": labels},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"}},
    }
