"""Shared by every test folder: specs rendered without a cluster, and `core_install`, the wheel alone in a
fresh virtualenv as the operator image installs it."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from peakserve.render import render_children
from peakserve.render.owner import Owner
from peakserve.api.validation import parse_spec

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


# --- The wheel as the operator image installs it ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT_S = 480


def _without_python_vars() -> dict[str, str]:
    """This environment less PYTHON* variables: none may bring the working tree's modules back."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


@dataclass(frozen=True)
class CoreInstall:
    """peakserve's wheel installed without extras into a fresh virtualenv, as images/operator/Dockerfile does."""

    wheel: Path
    python: Path
    peakserve: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment to run the virtualenv's commands in."""
        return _without_python_vars()


def _must_run(what: str, argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=_without_python_vars())
    except subprocess.TimeoutExpired as err:
        output = "".join(o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                         for o in (err.stdout, err.stderr))
        pytest.fail(f"{what}: no result after {PIP_TIMEOUT_S}s: {' '.join(argv)}\n{output[-6000:]}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit code {proc.returncode}): {' '.join(argv)}\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}", pytrace=False)


@pytest.fixture(scope="session")
def core_install(tmp_path_factory) -> CoreInstall:
    """Build the wheel as the Dockerfile does and install it alone (core dependencies from PyPI, no extras)
    into a fresh virtualenv of this Python. Built once per session, and only by sessions that ask for it."""
    work = tmp_path_factory.mktemp("core-install")
    # The Dockerfile's builder stage: COPY pyproject.toml, README.md and operator/ (less what .dockerignore
    # keeps out) into /src, then `pip wheel --no-deps -w /wheels .` there. Building from such a copy also
    # keeps build/ and egg-info out of the working tree, and a stale build/lib out of the wheel.
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.py[cod]"))
    wheels = work / "wheels"
    _must_run("building the peakserve wheel",
              [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(src)])
    built = sorted(wheels.glob("peakserve-*.whl"))
    assert len(built) == 1, f"expected one peakserve wheel in {wheels}, found {[w.name for w in built]}"

    venv = work / "venv"
    _must_run("creating the virtualenv", [sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _must_run("installing the wheel without extras", [str(python), "-m", "pip", "install", "--compile", str(built[0])])
    return CoreInstall(wheel=built[0], python=python, peakserve=venv / "bin" / "peakserve")
