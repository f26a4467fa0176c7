"""Rendering, build hashes and the CRD are the same in every process, not only twice in one.

Set iteration order depends on PYTHONHASHSEED, and model classes can depend on import order (a forward
reference once lost nested defaults in a fresh process). So the same outputs are computed here and in
fresh interpreters with other hash seeds that import only what they need, and compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
UID = "6f1c2a3e-0000-4000-8000-000000000001"

# Run in each interpreter: prints {name: sha256 of the output}. Imports stay inside, in this order,
# so that a fresh process loads the modules the way `peakserve render` and the builder do.
PROBE = r'''
import hashlib, json, sys
from pathlib import Path
import yaml
from peakserve.api.crd import render_crd_yaml
from peakserve.api.identity import build_hash
from peakserve.api.validation import parse_spec
from peakserve.render import render_all
from peakserve.render.owner import Owner
from peakserve.yamlio import dump_all

out = {"crd": render_crd_yaml()}
for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace="default", uid=sys.argv[2])
    spec = parse_spec(body["spec"])
    out["render:" + path.name] = dump_all(render_all(Owner.of(body), spec))
    if spec.build is not None:
        out["buildHash:" + path.name] = build_hash(spec)
print(json.dumps({k: hashlib.sha256(v.encode()).hexdigest() for k, v in out.items()}, sort_keys=True))
'''


def _digests(seed: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "tests" / "golden" / "inputs"), UID],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_outputs_do_not_depend_on_the_hash_seed():
    first, second = _digests("1"), _digests("4242")
    assert first == second
    assert any(k.startswith("buildHash:") for k in first), "no golden input has a build: the hash goes unchecked"


def test_a_fresh_process_writes_the_committed_crd_and_goldens():
    digests = _digests("7")
    committed = (REPO / "crds" / "peakserve.io_modeldeployments.yaml").read_text()
    assert digests["crd"] == hashlib.sha256(committed.encode()).hexdigest(), "crds/ differs from a fresh render"
    for name, digest in digests.items():
        if name.startswith("render:"):
            expected = (REPO / "tests" / "golden" / "expected" / name.removeprefix("render:")).read_text()
            assert digest == hashlib.sha256(expected.encode()).hexdigest(), f"golden {name} differs in a fresh process"


def _build_inputs() -> list[Path]:
    return [p for p in sorted((REPO / "tests" / "golden" / "inputs").glob("*.yaml"))
            if "build" in yaml.safe_load(p.read_text())["spec"]]


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return _digests("99")


@pytest.mark.parametrize("path", _build_inputs(), ids=lambda p: p.stem)
def test_build_hash_in_this_process_equals_a_fresh_one(path, fresh):
    from peakserve.api.identity import build_hash
    from peakserve.api.validation import parse_spec

    spec = parse_spec(yaml.safe_load(path.read_text())["spec"])
    assert fresh["buildHash:" + path.name] == hashlib.sha256(build_hash(spec).encode()).hexdigest()
