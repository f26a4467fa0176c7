"""Golden-file tests: each ModelDeployment in tests/golden/inputs/ renders exactly to
tests/golden/expected/<same name>.

After a deliberate rendering change, regenerate with `make golden`
(PEAKSERVE_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py) and review the diff.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
import yaml

from peakserve.render import render_all
from peakserve.render.owner import Owner
from peakserve.api.validation import parse_spec
from peakserve.yamlio import dump_all

REPO = Path(__file__).resolve().parents[2]
UID = "6f1c2a3e-0000-4000-8000-000000000001"
GOLDEN = REPO / "tests" / "golden"
INPUTS = sorted((GOLDEN / "inputs").glob("*.yaml"))
UPDATE = os.environ.get("PEAKSERVE_UPDATE_GOLDEN") == "1"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def render_file(path: Path) -> str:
    body = yaml.safe_load(path.read_text())
    body["metadata"]["namespace"] = "default"
    body["metadata"]["uid"] = UID
    return dump_all(render_all(Owner.of(body), parse_spec(body["spec"])))


def test_there_are_golden_inputs():
    assert {p.name for p in INPUTS} >= {"ranker.yaml", "autoscaled.yaml", "cpu-s3.yaml", "long-name.yaml"}


def test_every_expected_file_has_an_input():
    expected = {p.name for p in (GOLDEN / "expected").glob("*.yaml")}
    orphans = expected - {p.name for p in INPUTS}
    assert not orphans, f"expected files without an input (delete them): {sorted(orphans)}"


@pytest.mark.parametrize("source", INPUTS, ids=[p.stem for p in INPUTS])
def test_render_matches_golden(source: Path):
    expected_path = GOLDEN / "expected" / source.name
    actual = render_file(source)
    if UPDATE:  # writing the file proves nothing: the run says so instead of passing
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(actual)
        pytest.skip(f"rewrote expected/{source.name}: review the diff, then run the tests without the update flag")
    assert expected_path.exists(), f"{expected_path} is missing: run `make golden` and review it"
    expected = expected_path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                            fromfile=f"expected/{source.name}", tofile="rendered"))
        pytest.fail(f"rendering of {source.name} changed; if intended, run `make golden`:\n{diff}")


def test_ranker_golden_input_is_the_example():
    # The golden ranker is the documented example, so the README's example is what the test pins.
    assert (GOLDEN / "inputs" / "ranker.yaml").read_text() == (REPO / "examples" / "ranker.yaml").read_text(), (
        "examples/ranker.yaml changed: copy it to tests/golden/inputs/ranker.yaml and run `make golden`")




@pytest.mark.parametrize("source", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden_children_have_valid_names_and_labels(source: Path):
    """Whatever the ModelDeployment is called, every child name and label value is a DNS-1035 label."""
    for child in yaml.safe_load_all(render_file(source)):
        meta = child["metadata"]
        assert len(meta["name"]) <= 63 and DNS1035.match(meta["name"]), (child["kind"], meta["name"])
        for key, value in meta["labels"].items():
            assert len(value) <= 63, (child["kind"], key, value)
