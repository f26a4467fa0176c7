"""Simulated GPU nodes. KWOK keeps them Ready and runs the pods the scheduler binds to them.

Two kinds of GPU node:

- *plain* nodes (gpu-a10-*, gpu-h100-0): KWOK makes their pods Running and Ready at once, with a pod
  IP nobody can reach (10.244.0.0/16). Most tests use these.
- *probed* nodes (gpu-probed-*): they carry the extra taint and label ``peakserve.dev/probed=true``,
  so only pods that tolerate and select them land there. Their ``spec.podCIDR`` lies inside
  127.0.0.0/8, so a pod IP is a loopback address this host really answers on: 127.80.0.0/24 and
  127.80.1.0/24 for the first dev cluster on this host, 127.81.x.0/24 for a second one running at
  the same time, and so on (:func:`on_probed_net`; the cluster claims its /16 when it starts), so
  that two clusters never hand out the same pod IP and port. KWOK makes their pods
  Running but not Ready; the harness's pod agent (:mod:`peakserve_harness.pods.probed_pods`) starts
  a real tritonserver on the pod IP and turns the pod Ready when it answers ``/v2/health/ready``,
  as the kubelet's readiness probe would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from peakserve.api.spec import GPU_PRODUCT_LABEL

KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# The label and taint of probed nodes (key, value): a pod must select and tolerate both to land there.
PROBED_LABEL = "peakserve.dev/probed"
PROBED_VALUE = "true"
# Second octets of the 127.X.0.0/16 networks probed nodes take pod IPs from: one per running cluster.
PROBED_NET_OCTETS = range(80, 128)


def probed_cidr(octet: int, index: int) -> str:
    """The podCIDR of the index-th probed node of a cluster that holds 127.<octet>.0.0/16."""
    return f"127.{octet}.{index}.0/24"


@dataclass(frozen=True)
class GpuNode:
    name: str
    product: str
    gpus: int
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    # A loopback CIDR (127.x.y.0/24) makes this a probed node; see the module docstring.
    pod_cidr: str | None = None

    @property
    def probed(self) -> bool:
        return self.pod_cidr is not None


# Two products, so tests can prove the product selector and the GPU count both matter.
DEFAULT_NODES = (
    GpuNode("gpu-a10-0", "NVIDIA-A10", 4, cpu="48", memory="192Gi"),
    GpuNode("gpu-a10-1", "NVIDIA-A10", 4, cpu="48", memory="192Gi"),
    GpuNode("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 8, cpu="192", memory="2Ti"),
    # Untainted, for system workloads such as the operator itself (Helm tests install it).
    GpuNode("cpu-0", "", 0, cpu="16", memory="64Gi"),
    *(GpuNode(f"gpu-probed-{i}", "NVIDIA-A10", 4, cpu="48", memory="192Gi",
              pod_cidr=probed_cidr(PROBED_NET_OCTETS[0], i)) for i in range(2)),
)


def on_probed_net(nodes: tuple[GpuNode, ...], octet: int) -> tuple[GpuNode, ...]:
    """The nodes with their probed nodes' podCIDRs moved into 127.<octet>.0.0/16."""
    probed = [n for n in nodes if n.probed]
    return tuple(replace(n, pod_cidr=probed_cidr(octet, probed.index(n))) if n.probed else n for n in nodes)


def probed_node_names(nodes: tuple[GpuNode, ...] = DEFAULT_NODES) -> list[str]:
    return [n.name for n in nodes if n.probed]


def probed_toleration() -> dict[str, str]:
    """The toleration a pod needs (besides the GPU one) to be scheduled on a probed node."""
    return {"key": PROBED_LABEL, "operator": "Equal", "value": PROBED_VALUE, "effect": "NoSchedule"}


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
    spec: dict[str, Any] = {"taints": taints}
    if node.gpus > 0:
        capacity["nvidia.com/gpu"] = str(node.gpus)
        labels.update({GPU_PRODUCT_LABEL: node.product, "nvidia.com/gpu.count": str(node.gpus),
                       "nvidia.com/gpu.present": "true"})
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    if node.probed:
        labels[PROBED_LABEL] = PROBED_VALUE
        taints.append({"key": PROBED_LABEL, "value": PROBED_VALUE, "effect": "NoSchedule"})
        # KWOK v0.7.0's PodIPWith takes pod IPs from the node's spec.podCIDR (see kwok_stages).
        spec.update({"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]}, "labels": labels},
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity,
                   "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"}},
    }
