"""Names and labels of a ModelDeployment's children.

A ModelDeployment name may be up to 253 characters and contain dots, but a Service name
is a DNS-1035 label (at most 63 characters, a letter first, no dots), and so is every
label value. Long or unusual names are shortened with a hash so two names never collide.
"""

from __future__ import annotations

import hashlib
import re

from ..api import FIELD_MANAGER

MAX_LABEL = 63
HASH_LEN = 8

LABEL_MD = "peakserve.io/model-deployment"
ANNOTATION_MD = "peakserve.io/model-deployment"
ANNOTATION_CONFIG_HASH = "peakserve.io/triton-config-hash"
ANNOTATION_BUILD_HASH = "peakserve.io/build-hash"
ANNOTATION_BUILD_RESULT = "peakserve.io/build-result"
LABEL_BUILD_HASH = "peakserve.io/build-hash"
LABEL_TRACK = "peakserve.io/track"          # stable | canary, on the Triton pods
ANNOTATION_TEMPLATE_HASH = "peakserve.io/template-hash"  # on a serving Deployment: the pod template it runs
STABLE, CANARY = "stable", "canary"
BUILD_COMPONENT = "model-build"
ANALYSIS_COMPONENT = "rollout-analysis"
MANAGER = FIELD_MANAGER

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def child_name(md_name: str, reserve: int = 0) -> str:
    """A DNS-1035 label derived from md_name, leaving `reserve` characters for a suffix."""
    limit = MAX_LABEL - reserve
    if len(md_name) <= limit and _DNS1035.match(md_name):
        return md_name
    digest = hashlib.sha256(md_name.encode()).hexdigest()[:HASH_LEN]
    cleaned = re.sub(r"[^a-z0-9-]", "-", md_name.lower())
    if not cleaned[0].isalpha():
        cleaned = "m" + cleaned
    stem = cleaned[: limit - HASH_LEN - 1].rstrip("-")
    return f"{stem}-{digest}"


def config_map_name(md_name: str) -> str:
    return child_name(md_name, reserve=len("-triton-config")) + "-triton-config"


def canary_name(md_name: str) -> str:
    """The canary Deployment, beside the stable one (which is named child_name(md_name))."""
    return child_name(md_name, reserve=len("-canary")) + "-canary"


def canary_config_map_name(md_name: str) -> str:
    """The canary's own Triton config: a new config never reaches the stable pods before promotion."""
    return child_name(md_name, reserve=len("-canary-triton-config")) + "-canary-triton-config"


def track_service_name(md_name: str, track: str) -> str:
    """A Service of one track, for a Gateway API route with exact weights."""
    return child_name(md_name, reserve=len(track) + 1) + "-" + track


def analysis_job_name(md_name: str, template_hash: str, step: int) -> str:
    """One analysis Job per (canary template, step): a restarted operator finds it instead of starting another."""
    suffix = f"-analysis-{template_hash}-{step}"
    return child_name(md_name, reserve=len(suffix)) + suffix


def build_job_name(md_name: str, build_hash: str) -> str:
    """One Job per (ModelDeployment, build hash): the name itself makes the build idempotent."""
    suffix = f"-build-{build_hash}"
    return child_name(md_name, reserve=len(suffix)) + suffix


def build_labels(md_name: str, build_hash: str) -> dict[str, str]:
    """Labels of a build Job and its pod. Deliberately without the serving selector label, so the
    Triton Service never routes to a build pod and pod listings for serving never see one."""
    return {
        "app.kubernetes.io/name": "peakserve-model-builder",
        "app.kubernetes.io/instance": child_name(md_name),
        "app.kubernetes.io/component": BUILD_COMPONENT,
        "app.kubernetes.io/managed-by": MANAGER,
        LABEL_BUILD_HASH: build_hash,
    }


def selector_labels(md_name: str) -> dict[str, str]:
    """Immutable: the Deployment selector is built from these and can never change."""
    return {LABEL_MD: child_name(md_name)}


def label_selector(labels: dict[str, str]) -> str:
    """A labelSelector query string (k=v,k=v) for list and watch requests."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def track_labels(md_name: str, track: str) -> dict[str, str]:
    return {**selector_labels(md_name), LABEL_TRACK: track}


def pod_selector(md_name: str) -> str:
    """The labelSelector of a ModelDeployment's Triton pods."""
    return label_selector(selector_labels(md_name))


def common_labels(md_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton-inference-server",
        "app.kubernetes.io/instance": child_name(md_name),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/managed-by": MANAGER,
        **selector_labels(md_name),
    }
