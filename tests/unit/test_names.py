"""Child names: a ModelDeployment may be named like any DNS-1123 subdomain (253 characters, dots),
but its Service and the label values derived from it must be DNS-1035 labels."""

from __future__ import annotations

import hashlib
import re

import pytest

from peakserve.render.names import MAX_LABEL, child_name, common_labels, config_map_name, selector_labels

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def is_dns1035(name: str) -> bool:
    return len(name) <= MAX_LABEL and bool(DNS1035.match(name))


@pytest.mark.parametrize("name", ["ranker", "r", "ranker-v2", "a" * 63])
def test_valid_short_names_are_kept(name):
    assert child_name(name) == name


AWKWARD = [
    "a" * 64,
    "recommendations.homepage.ranker",
    "Ranker",
    "RANKER.V2",
    "2024-ranker",
    "9",
    "ranker-",  # not a valid label: ends with a dash
    "x" * 62 + ".y",
    "a-" * 126 + "a",  # 253 characters, the longest object name
    "-".join(["seg"] * 80),
]


@pytest.mark.parametrize("name", AWKWARD)
def test_awkward_names_become_dns1035_labels(name):
    child = child_name(name)
    assert is_dns1035(child), child
    assert child != name


def test_child_name_is_stable_across_processes():
    # The Deployment selector is built from the child name and can never change, so the suffix must be a
    # content hash (not Python's per-process hash()).
    name = "recommendations.homepage.ranker"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    assert child_name(name) == f"recommendations-homepage-ranker-{digest}"


def test_distinct_long_names_with_a_shared_prefix_stay_distinct():
    prefix = "promotion-peak-ranker-" * 4
    names = [prefix + suffix for suffix in ("black-friday", "cyber-monday", "a", "b")]
    children = {child_name(n) for n in names}
    assert len(children) == len(names)


def test_names_differing_only_in_case_or_punctuation_stay_distinct():
    names = ["ranker.v2", "ranker-v2-x", "Ranker.v2", "RANKER.V2"]
    children = [child_name(n) for n in names]
    assert len(set(children)) == len(names)
    # The valid one keeps its name; the others are hashed and cannot collide with it.
    assert children[1] == "ranker-v2-x"


@pytest.mark.parametrize("name", ["ranker", "a" * 49, "a" * 50, "a" * 63] + AWKWARD)
def test_config_map_name_fits(name):
    cm = config_map_name(name)
    assert is_dns1035(cm), cm
    assert cm.endswith("-triton-config")


def test_config_map_name_keeps_short_names_readable():
    assert config_map_name("ranker") == "ranker-triton-config"


def test_config_map_names_stay_distinct_for_long_names():
    a, b = "x" * 60 + "-a", "x" * 60 + "-b"
    assert config_map_name(a) != config_map_name(b)


@pytest.mark.parametrize("name", ["ranker"] + AWKWARD)
def test_label_values_are_valid(name):
    for key, value in {**common_labels(name), **selector_labels(name)}.items():
        assert len(value) <= MAX_LABEL, key
        assert re.match(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$", value), (key, value)


def test_selector_is_part_of_the_common_labels():
    assert selector_labels("ranker").items() <= common_labels("ranker").items()
