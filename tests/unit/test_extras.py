"""peakserve.extras: the modules it checks for each extra are the ones pyproject.toml's extras install,
and a command whose extra is missing fails with one line naming the extra and the pip command."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from peakserve import cli, extras
from peakserve.extras import EXTRAS, MissingExtra, require

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Distribution -> the module it installs, where the two names differ beyond case and "-"/"_".
MODULE_OF: dict[str, str] = {"pyyaml": "yaml"}


def _module(requirement: str) -> str:
    """'tritonclient[http,grpc]==2.73.0' -> 'tritonclient'."""
    distribution = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0).lower()
    return MODULE_OF.get(distribution, distribution.replace("-", "_").replace(".", "_"))


def _pyproject_extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("extra", ["build", "client", "plan"])
def test_extras_match_pyproject(extra):
    declared = _pyproject_extras()
    assert extra in declared and extra in EXTRAS
    assert set(EXTRAS[extra]) == {_module(r) for r in declared[extra]}, (
        f"peakserve.extras.EXTRAS[{extra!r}] and pyproject.toml's [{extra}] extra disagree "
        "(add a MODULE_OF entry where a distribution installs a module of another name)")


def test_every_checked_extra_is_declared():
    assert set(EXTRAS) <= set(_pyproject_extras())


@pytest.mark.parametrize("argv, extra", [
    (["build", "-f", "md.yaml"], "build"),
    (["bench", "--url", "127.0.0.1:8001", "--model", "ranker"], "client"),
    (["plan"], "plan"),
])
def test_commands_check_their_extra(argv, extra):
    assert cli.parser().parse_args(argv).extra == extra


@pytest.mark.parametrize("argv", [["run"], ["render", "-f", "-"], ["crd"], ["crds", "apply"], ["docs"]],
                         ids=lambda a: a[0])
def test_core_commands_check_no_extra(argv):
    assert getattr(cli.parser().parse_args(argv), "extra", None) is None


def _hide(monkeypatch, *missing: str) -> None:
    """find_spec finds every module but `missing`."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in missing else real("json"))


def test_require_names_the_first_missing_module(monkeypatch):
    _hide(monkeypatch, "onnx", "numpy")
    with pytest.raises(MissingExtra) as err:
        require("build", "build")
    assert str(err.value) == ("peakserve build needs the 'build' extra (onnx is not installed): "
                              "pip install 'peakserve[build]'")
    assert extras.missing_module("build") == "onnx"


def test_require_passes_when_the_extra_is_installed(monkeypatch):
    _hide(monkeypatch, "torch")  # not a module of the plan extra
    assert require("plan", "plan") is None
    assert extras.missing_module("plan") is None


def test_main_prints_one_line_and_exits_2(monkeypatch, capsys):
    _hide(monkeypatch, "matplotlib")
    assert cli.main(["plan"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "peakserve plan needs the 'plan' extra (matplotlib is not installed): "
                              "pip install 'peakserve[plan]'\n")
