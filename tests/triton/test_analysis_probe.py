"""`peakserve analyze` against real tritonservers: the probe comparison of two rankers, end to end.

The sample ranker and a ranker of the same architecture trained on shuffled feature columns
(model_repo/ranker/train.py --shuffle-columns) are each built by the real builder (fp32, so no
speed gate: it publishes model.onnx and probe.npz) and served by their own tritonserver (python
backend on CPU, as in test_serve_built_ranker.py). The command runs as the Job runs it, a
subprocess writing its result file, without Prometheus (metric checks skipped):

- the good ranker against a second server of the same build passes (PSI 0, top-k 1.0, same AUC);
- the good ranker against the shuffled one fails on the probe (score drift, top-k, AUC);
- an unreachable canary makes the analysis itself fail (exit 3, AnalysisError).

Training takes minutes on 2 cores, so both trained sources are kept in the harness cache
(~/.cache/peakserve/samples), keyed by the digest of train.py and model.py; `make samples`'
model_repo/ranker/inputs is used for the good one when it is current. Warm, the module takes
well under a minute: two builds, three servers, three analyses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peakserve.builder.probe_data import read_probe, write_probe
from peakserve.api.spec import RolloutAnalysis
from peakserve.builder.pipeline import run_build
from peakserve_harness.sample_ranker import fp32_build_spec, trained_source
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton

ROOT = Path(__file__).resolve().parents[2]
SHUFFLE_SEED = 3
# A cold cache trains two rankers first (about 2 minutes each on 2 loaded cores).
pytestmark = pytest.mark.timeout(900)


# ------------------------------------------------------------------------------------------ sources

@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{"good": repo, "shuffled": repo}: published builds (model.onnx + probe.npz + config)."""
    root = tmp_path_factory.mktemp("analysis")
    out = {}
    for name, args in (("good", ()), ("shuffled", ("--shuffle-columns", str(SHUFFLE_SEED)))):
        result = run_build(fp32_build_spec(), trained_source(*args), root / name, quiet=True)
        assert result.phase == "Succeeded", result.message
        out[name] = root / name / result.artifact
    return out


@pytest.fixture(scope="module")
def servers(triton_installed, builds, tmp_path_factory):
    """Three servers: the good build twice, the shuffled build once."""
    root = tmp_path_factory.mktemp("serving")
    plan = {"good": builds["good"], "good-again": builds["good"], "shuffled": builds["shuffled"]}
    started = {name: LocalTriton(local_repository(repo, root / name), workdir=root / f"{name}-server")
               for name, repo in plan.items()}
    try:
        for server in started.values():   # they start in parallel, then each is awaited
            server.start()
        for server in started.values():
            server.wait_ready(120)
        yield started
    finally:
        for server in started.values():
            server.terminate()
        for server in started.values():
            server.stop()


def analyze(tmp_path: Path, probe: Path, stable: list[str], canary: list[str]) -> tuple[int, dict, str]:
    """`peakserve analyze` as the Job runs it; (exit code, the result file, stderr)."""
    result = tmp_path / "termination-log"
    thresholds = json.dumps(RolloutAnalysis().model_dump(mode="json", by_alias=True))
    argv = [str(Path(sys.executable).with_name("peakserve")), "analyze", "--model", "ranker", "--version", "1",
            "--probe", str(probe), "--namespace", "shop", "--stable-pods", "ranker-.*", "--canary-pods",
            "ranker-canary-.*", "--thresholds", thresholds, "--result-file", str(result)]
    for flag, urls in (("--stable", stable), ("--canary", canary)):
        for url in urls:
            argv += [flag, url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(result.read_text()), proc.stderr


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------------------------------ tests

def test_the_build_publishes_the_probe_beside_the_model(builds):
    version = builds["good"] / "ranker" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "probe.npz"]
    inputs, labels = read_probe(version / "probe.npz", ["sparse_ids", "dense"])
    with np.load(trained_source() / "evaluation.npz") as evaluation:
        assert np.array_equal(inputs["sparse_ids"], evaluation["sparse_ids"])
        assert np.array_equal(inputs["dense"], evaluation["dense"])
        assert np.array_equal(labels, evaluation["label"])
    manifest = json.loads((builds["good"] / "manifest.json").read_text())
    assert manifest["probe"] == {"path": "ranker/1/probe.npz", "rows": 4096, "labels": True}


def test_the_same_ranker_on_both_sides_passes(servers, builds, tmp_path):
    probe = builds["good"] / "ranker" / "1" / "probe.npz"
    # The first stable endpoint is down: the next one answers.
    code, out, stderr = analyze(tmp_path, probe, [closed_port(), servers["good"].http_address],
                                [servers["good-again"].http_address])
    assert code == 0, stderr
    assert (out["phase"], out["passed"], out["reason"]) == ("Succeeded", True, "Passed"), out
    figures = out["figures"]
    assert figures["probeRows"] == 512 and figures["psi"] == 0 and figures["ks"] == 0
    assert figures["topKAgreement"] == 1.0 and figures["maxAbsDiff"] == 0
    assert figures["stableAuc"] == figures["canaryAuc"] > 0.75
    assert out["skipped"] == ["metrics: no Prometheus address (--prometheus)"]
    assert out["message"].startswith("canary within thresholds: score PSI 0")


def test_a_ranker_trained_on_shuffled_columns_fails_the_probe(servers, builds, tmp_path):
    probe = builds["good"] / "ranker" / "1" / "probe.npz"
    code, out, stderr = analyze(tmp_path, probe, [servers["good"].http_address],
                                [servers["shuffled"].http_address])
    assert code == 0, stderr
    assert (out["phase"], out["passed"]) == ("Succeeded", False), out
    assert out["reason"] in ("ScoreDrift", "TopKAgreement", "AucDrop")
    figures = out["figures"]
    assert figures["stableAuc"] - figures["canaryAuc"] > 0.02
    assert "on 512 probe rows" in out["message"]
    print(f"\nshuffled canary: {out['message']}")


def test_an_unreachable_canary_or_a_probe_that_does_not_fit_is_an_analysis_error(servers, builds, tmp_path):
    probe = builds["good"] / "ranker" / "1" / "probe.npz"
    down = closed_port()
    code, out, _ = analyze(tmp_path, probe, [servers["good"].http_address], [down])
    assert code == 3
    assert out == {"phase": "Failed", "passed": False, "reason": "AnalysisError",
                   "message": f"no canary endpoint serves model ranker: {down}: connection"}

    inputs, labels = read_probe(probe, ["sparse_ids", "dense"])
    write_probe(tmp_path / "float64.npz", {**inputs, "dense": inputs["dense"].astype(np.float64)}, labels)
    code, out, _ = analyze(tmp_path, tmp_path / "float64.npz", [servers["good"].http_address],
                           [servers["good-again"].http_address])
    assert (code, out["reason"]) == (3, "AnalysisError")
    assert out["message"] == "probe input 'dense' is float64, the stable model takes FP32"
