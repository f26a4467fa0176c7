"""Shared helpers for the unit tests: build specs and render them without a cluster."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import urllib.parse
from typing import Any, Callable

import pytest

from peakserve.render import render_children
from peakserve.triton.install import ensure_installed
from peakserve.render.owner import Owner
from peakserve.validation import parse_spec

UID = "6f1c2a3e-0000-4000-8000-000000000001"

# The smallest spec the models accept: everything else takes its default.
MINIMAL_SPEC: dict[str, Any] = {
    "model": {
        "name": "ranker",
        "uri": "pvc://model-store/ranker/1",
        "inputs": [{"name": "features", "dataType": "FP32", "dims": [16]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}],
    },
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge patch into a copy of base (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def body_for(spec: dict[str, Any], name: str = "ranker") -> dict[str, Any]:
    return {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "default", "uid": UID}, "spec": spec}


@pytest.fixture
def spec_dict() -> Callable[..., dict[str, Any]]:
    """spec_dict(patch) -> MINIMAL_SPEC deep-merged with patch."""
    return lambda patch=None: merge(MINIMAL_SPEC, patch or {})


@pytest.fixture
def render(spec_dict) -> Callable[..., dict[str, dict[str, Any]]]:
    """render(patch, name=...) -> {kind: child} for MINIMAL_SPEC deep-merged with patch."""

    def _render(patch: dict[str, Any] | None = None, name: str = "ranker") -> dict[str, dict[str, Any]]:
        body = body_for(spec_dict(patch), name)
        children = render_children(Owner.of(body), parse_spec(body["spec"]))
        by_kind = {c["kind"]: c for c in children}
        assert len(by_kind) == len(children), "one child per kind"
        return by_kind

    return _render


# The real tritonserver (nvidia-pytriton's binary) for the serving tests; `make tools` installs it.
def _network_down() -> str | None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    host = urllib.parse.urlparse(index).hostname or "pypi.org"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        return f"{host}:443 unreachable ({e})"
    return None


@pytest.fixture(scope="module")
def triton_installed():
    try:
        return ensure_installed(log=lambda m: print(m, file=sys.stderr))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        down = _network_down()
        if down:
            pytest.skip(f"cannot install the tritonserver tool virtualenv, network down: {down}; "
                        "run `make tools` where the network is up")
        raise AssertionError(f"installing the tritonserver tool virtualenv failed: {e}") from e
