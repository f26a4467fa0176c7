"""The README's CRD reference is generated from the spec models; it must not go stale."""

from pathlib import Path

from peakserve.api.reference import BEGIN, END, render_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_crd_reference_is_current():
    text = README.read_text()
    section = text[text.index(BEGIN): text.index(END) + len(END)]
    assert section == render_reference(), "README CRD reference is stale: run `make docs`"


def test_reference_covers_every_top_level_field():
    reference = render_reference()
    for field in ("spec.model.uri", "spec.serving.gpuProduct", "spec.serving.rollout.maxSurge",
                  "spec.autoscaling.metric", "status.conditions", "status.endpoint.http"):
        assert f"`{field}`" in reference
