"""make demo's last step: the real tritonserver serves a built artifact and answers real requests.

The local tritonserver (from nvidia-pytriton) has only the python backend, so the artifact is served
through a thin python-backend model that runs the very same model.onnx with onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from peakserve.loadgen.client import infer
from peakserve_harness.triton.metrics_text import metric_values, parse_metrics, scrape_metrics
from peakserve_harness.triton.install import ensure_installed
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, required=True, help="a built repository (STORE/HASH)")
    parser.add_argument("--evaluation", type=Path, required=True, help="evaluation.npz with real inputs")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args()

    manifest = json.loads((args.repository / "manifest.json").read_text())
    model_dir = next(p for p in args.repository.iterdir() if (p / "config.pbtxt").is_file())
    onnx_file = next(model_dir.glob("*/model.onnx"))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    data = np.load(args.evaluation)
    inputs = {i.name: data[i.name][: args.rows] for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    direct = dict(zip(outputs, session.run(outputs, inputs)))

    ensure_installed(log=lambda m: None)
    with tempfile.TemporaryDirectory(prefix="peakserve-demo-") as tmp:
        repo = local_repository(args.repository, Path(tmp) / "repo")
        with LocalTriton(repo, workdir=Path(tmp) / "server") as server:
            seconds = server.wait_ready(timeout=120)
            print(f"tritonserver ready in {seconds:.1f}s (model {model_dir.name}, "
                  f"candidate {manifest.get('choice', {}).get('candidate', '?')}, warmed up before ready)")
            http = infer(server.http_url, model_dir.name, inputs, outputs, protocol="http")
            grpc = infer(server.grpc_url, model_dir.name, inputs, outputs, protocol="grpc")
            for name in outputs:
                print(f"{name} over HTTP: {[f'{v:.4f}' for v in http[name].ravel()]}")
                print(f"{name} over gRPC: {[f'{v:.4f}' for v in grpc[name].ravel()]}")
                gap = float(np.max(np.abs(http[name] - direct[name])))
                print(f"max |served - onnxruntime on the same model.onnx| = {gap:.2e}")
            metrics = parse_metrics(scrape_metrics(server.metrics_url))
            served = sum(metric_values(metrics, "nv_inference_request_success", model=model_dir.name))
            print(f"nv_inference_request_success{{model=\"{model_dir.name}\"}} = {served:.0f} (2 requests + one warmup per model instance)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
