"""A peakserve release beside the working tree: its source from git, its chart, its CRD, its operator command,
and its rendering. The upgrade test installs the previous release and upgrades to the working tree's."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from integration.chart import chart_run_args, chart_template
from integration.cluster import ROOT

# The previous released commit: the last one that landed with CI green (issue 11, "Review mend: one
# aggregation-layer module ..."). The upgrade test installs its chart and runs its operator from its source.
PREVIOUS_RELEASE = "1856ba7"


@dataclass(frozen=True)
class Release:
    """One version of peakserve as files: the operator's source (operator/), the chart, the CRDs."""

    label: str
    root: Path

    @property
    def chart(self) -> Path:
        return self.root / "charts" / "peakserve"

    @property
    def crd_files(self) -> list[Path]:
        """The CRDs Helm installs from the chart's crds/ on first install."""
        return sorted((self.chart / "crds").glob("*.yaml"))

    @property
    def python(self) -> list[str]:
        """This virtualenv's python with this release's source first on the path (ahead of the editable install
        of the working tree, which the virtualenv's .pth appends after PYTHONPATH)."""
        return ["env", f"PYTHONPATH={self.root / 'operator'}", sys.executable]

    @property
    def peakserve(self) -> list[str]:
        return [*self.python, "-m", "peakserve.cli"]

    def imported_from(self) -> Path:
        """Where `import peakserve` resolves for this release's command: proof of which source runs."""
        out = subprocess.run([*self.python, "-c", "import peakserve; print(peakserve.__file__)"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return Path(out.strip())

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.peakserve, *args], input=input, capture_output=True, text=True,
                                timeout=timeout, cwd=self.root)
        assert result.returncode == 0, f"{self.label}: peakserve {' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def render(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """`peakserve render` of one ModelDeployment (name, namespace, uid and spec as given) by this release."""
        meta = body["metadata"]
        md = {"apiVersion": body["apiVersion"], "kind": body["kind"], "spec": body["spec"],
              "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}
        out = self.cli("render", "-f", "-", "-n", meta["namespace"], input=yaml.safe_dump(md)).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def chart_objects(self, release: str, namespace: str, template: str) -> list[dict[str, Any]]:
        """The objects one template of this release's chart renders with its default values."""
        return chart_template(release, namespace, template, chart=self.chart)

    def operator_pod(self, release: str, namespace: str) -> tuple[str, list[str]]:
        """The chart Deployment's ServiceAccount, and the args it passes after `run` less the listen addresses."""
        [deployment] = self.chart_objects(release, namespace, "templates/deployment.yaml")
        return (deployment["spec"]["template"]["spec"]["serviceAccountName"],
                chart_run_args(release, namespace, chart=self.chart))


def current_release() -> Release:
    """The working tree, as it is when the test runs."""
    return Release("working tree", ROOT)


def previous_release(into: Path, commit: str = PREVIOUS_RELEASE) -> Release:
    """`git archive <commit>` unpacked into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, timeout=120)
    assert archive.returncode == 0, f"git archive {commit}: {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=120)
    return Release(commit, into)
