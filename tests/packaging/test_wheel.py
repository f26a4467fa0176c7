"""The wheel the operator image ships, built and installed the way images/operator/Dockerfile does it:
it holds the peakserve package and nothing else, and without extras the operator's commands work and
the extras' commands say which extra they need. These tests start processes and install from PyPI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from peakserve.cli import parser
from peakserve.extras import EXTRAS

# The first test also builds and installs the wheel (core_install: up to 8 minutes a pip step).
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "harness" / "peakserve_harness"

# Modules of the operator that the image cannot run without.
OPERATOR_MODULES = ["peakserve/cli.py", "peakserve/runtime/handlers.py", "peakserve/decide/decision.py",
                    "peakserve/cluster/client.py", "peakserve/render/deployment.py", "peakserve/api/spec.py"]

# What must never reach the wheel: the dev harness (now and under its names before it moved out of the
# package), tests and benchmarks.
NOT_SHIPPED = {
    "the dev harness package": r"peakserve_harness",
    "the old in-package dev cluster": r"(^|/)devcluster/",
    "the local tritonserver harness": r"(^|/)triton/",
    "the KWOK pod servers": r"(^|/)pods/",
    "the local control plane": r"(^|/)controlplane/",
    "the Prometheus/adapter harness": r"(^|/)metrics/",
    "tests": r"(^|/)tests?/|(^|/)(test_[^/]*|conftest)\.py$",
    "benchmarks": r"(^|/)benchmarks?/|(^|/)bench_[^/]*\.py$",
}

HEAVY_MODULES = sorted({module for modules in EXTRAS.values() for module in modules})


def _wheel_names(core_install) -> list[str]:
    with zipfile.ZipFile(core_install.wheel) as wheel:
        return wheel.namelist()


def _core(core_install, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The core venv's `peakserve`, run outside the working tree so that nothing of it is importable."""
    return subprocess.run([str(core_install.peakserve), *args], cwd=cwd, env=core_install.env,
                          capture_output=True, text=True, timeout=120)


def test_wheel_holds_the_peakserve_package_and_nothing_else(core_install):
    names = _wheel_names(core_install)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {name.split("/")[0] for name in names} == {"peakserve", f"peakserve-{version}.dist-info"}, names
    for what, pattern in NOT_SHIPPED.items():
        found = [name for name in names if re.search(pattern, name)]
        assert not found, f"the wheel ships {what}: {found}"
    # Every module of the harness, whatever its folder is called, under the operator's package.
    own = {"__init__.py", "cli.py"}  # names both packages have, each its own
    harness = sorted(p.relative_to(HARNESS).as_posix() for p in HARNESS.rglob("*.py"))
    leaked = [f"peakserve/{rel}" for rel in harness if rel not in own and f"peakserve/{rel}" in names]
    assert not leaked, f"the wheel ships dev harness modules: {leaked}"


def test_wheel_holds_the_operator_and_only_the_user_cli(core_install):
    names = _wheel_names(core_install)
    missing = [module for module in OPERATOR_MODULES if module not in names]
    assert not missing, f"the wheel lacks operator modules: {missing}"
    with zipfile.ZipFile(core_install.wheel) as wheel:
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = [line.split("=")[0].strip() for line in entry_points.split("[console_scripts]")[1].splitlines()
               if "=" in line]
    assert scripts == ["peakserve"], entry_points


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["crds", "--help"]], ids=" ".join)
def test_help_without_extras(core_install, tmp_path, args):
    result = _core(core_install, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: peakserve") and not result.stderr, result.stdout + result.stderr


def test_render_without_extras_matches_the_dev_venv(core_install, tmp_path):
    example = str(ROOT / "examples" / "ranker.yaml")
    core = _core(core_install, "render", "-f", example, cwd=tmp_path)
    assert core.returncode == 0, core.stderr
    dev = subprocess.run([sys.executable, "-m", "peakserve.cli", "render", "-f", example],
                         capture_output=True, text=True, timeout=120)
    assert dev.returncode == 0, dev.stderr
    assert "kind: Deployment" in core.stdout
    assert core.stdout == dev.stdout


def test_crd_without_extras_is_the_committed_one(core_install, tmp_path):
    result = _core(core_install, "crd", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "crds" / "peakserve.io_modeldeployments.yaml").read_text()


def test_docs_without_extras_finds_the_readme_current(core_install, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy2(ROOT / "README.md", readme)
    result = _core(core_install, "docs", "--readme", str(readme), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{readme}: CRD reference already current\n"
    assert readme.read_text() == (ROOT / "README.md").read_text()


@pytest.mark.parametrize("argv, line", [
    (lambda tmp: ["build", "-f", str(ROOT / "examples" / "ranker-build.yaml"),
                  "--source", str(ROOT / "model_repo" / "ranker" / "inputs"), "--out", str(tmp / "out")],
     "peakserve build needs the 'build' extra (torch is not installed): pip install 'peakserve[build]'"),
    (lambda tmp: ["bench", "--url", "127.0.0.1:8001", "--model", "ranker", "--concurrency", "2", "--duration", "1"],
     "peakserve bench needs the 'client' extra (tritonclient is not installed): pip install 'peakserve[client]'"),
    (lambda tmp: ["plan", "--trace", str(ROOT / "traces" / "singles-day.csv"),
                  "-f", str(ROOT / "examples" / "ranker.yaml"), "--out", str(tmp / "out")],
     "peakserve plan needs the 'plan' extra (matplotlib is not installed): pip install 'peakserve[plan]'"),
    (lambda tmp: ["analyze", "--model", "ranker", "--version", "1", "--stable", "127.0.0.1:8000", "--canary", "127.0.0.1:8000",
                  "--result-file", str(tmp / "out")],
     "peakserve analyze needs the 'client' extra (tritonclient is not installed): pip install 'peakserve[client]'"),
], ids=["build", "bench", "plan", "analyze"])
def test_extra_commands_name_their_extra(core_install, tmp_path, argv, line):
    args = argv(tmp_path)
    parser().parse_args(args)  # argparse accepts them (its usage errors exit 2 as well)
    result = _core(core_install, *args, cwd=tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", ""), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("venv", ["core", "dev"])
def test_the_operator_imports_no_extra(core_install, tmp_path, venv):
    """Core: the import works without the extras. Dev (where they are installed): it still loads none."""
    python = str(core_install.python) if venv == "core" else sys.executable
    script = ("import json, sys, peakserve, peakserve.runtime.handlers, peakserve.cli; "
              f"print(json.dumps([peakserve.__file__, sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)]))")
    result = subprocess.run([python, "-c", script], cwd=tmp_path, env=core_install.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    origin, heavy = json.loads(result.stdout)
    assert heavy == [], f"importing the operator loaded {heavy}"
    if venv == "core":
        assert Path(origin).is_relative_to(core_install.python.parent.parent), origin


def test_the_dev_harness_is_not_installed(core_install, tmp_path):
    result = subprocess.run([str(core_install.python), "-c", "import peakserve_harness"], cwd=tmp_path,
                            env=core_install.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'peakserve_harness'" in result.stderr, result.stderr
