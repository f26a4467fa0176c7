"""Warm GPU headroom: low-priority placeholder pods sized like one Triton replica.

They keep GPU nodes provisioned (a cluster autoscaler scales for them like for any pod) and are
preempted the moment a Triton pod of higher priority needs the GPUs, which skips the node start
when a promotion begins. Their labels never match the Triton Service or Deployment selector.
"""

from __future__ import annotations

from typing import Any

from ..api.spec import GPU_PRODUCT_LABEL, ModelDeploymentSpec
from . import names
from .deployment import container_security, gpu_toleration
from .owner import Owner


def headroom_name(md_name: str) -> str:
    return names.child_name(md_name, reserve=len("-headroom")) + "-headroom"


def headroom_labels(md_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "peakserve-gpu-headroom",
            "app.kubernetes.io/instance": names.child_name(md_name),
            "app.kubernetes.io/component": "gpu-headroom",
            "app.kubernetes.io/managed-by": names.MANAGER}


def render_headroom(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any]:
    headroom, serving = spec.autoscaling.headroom, spec.serving
    gpus = {serving.gpu_resource: serving.gpus} if serving.gpus else {}
    node_selector = dict(serving.node_selector)
    if serving.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = serving.gpu_product
    meta = owner.metadata(headroom_name(owner.name))
    meta["labels"] = headroom_labels(owner.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": headroom.replicas,
            "selector": {"matchLabels": headroom_labels(owner.name)},
            "template": {
                "metadata": {"labels": headroom_labels(owner.name)},
                "spec": {
                    "priorityClassName": headroom.priority_class_name,
                    "terminationGracePeriodSeconds": 0,  # preemption should free the GPUs at once
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65535,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "placeholder", "image": headroom.image,
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi", **gpus},
                                      "limits": {"memory": "16Mi", **gpus}},
                        "securityContext": container_security(),
                    }],
                    "nodeSelector": node_selector,
                    "tolerations": [gpu_toleration()] if serving.gpus else [],
                },
            },
        },
    }
