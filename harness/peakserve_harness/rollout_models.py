"""Model versions for rollout tests and the demo: ready-made ONNX model directories (hostPath URIs).

- `good`: a small ranker MLP (dense FP32[13] -> score FP32[1]).
- `good_copy`: the same weights in another directory: a new pod template that scores identically.
- `shuffled`: the same MLP fed its feature columns in another order, as if trained on shuffled columns:
  it loads, answers every request, with plausible scores in the wrong order.
- `failing`: loads and passes the all-zero warmup, but every real request fails at run time.
- `broken`: a model.onnx that is not ONNX: Triton never loads it, so its pod never turns Ready.

The probe file holds rows drawn like real traffic and labels drawn from the good model's own scores
(Bernoulli(sigmoid(score))), so the stable AUC is that of a well-calibrated ranker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

FEATURES = 13


def _export(module, path: Path) -> Path:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, FEATURES),), str(path / "model.onnx"), input_names=["dense"],
                          output_names=["score"], dynamic_axes={"dense": {0: "b"}, "score": {0: "b"}},
                          dynamo=False)
    return path


def _mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()


def _failing(path: Path) -> Path:
    """Loads, passes Triton's all-zero warmup, and fails every request with a non-zero input at run time:
    a Gather whose index is 5 (out of its one-element table) as soon as any input value is not zero."""
    import onnx
    from onnx import TensorProto, helper

    path.mkdir(parents=True, exist_ok=True)
    constants = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("five", TensorProto.INT64, [], [5]),
                 helper.make_tensor("table", TensorProto.FLOAT, [1], [0.0])]
    nodes = [helper.make_node("Abs", ["dense"], ["magnitude"]),
             helper.make_node("ReduceMax", ["magnitude"], ["largest"], keepdims=0),
             helper.make_node("Greater", ["largest", "zero"], ["nonzero"]),
             helper.make_node("Cast", ["nonzero"], ["flag"], to=TensorProto.INT64),
             helper.make_node("Mul", ["flag", "five"], ["index"]),
             helper.make_node("Unsqueeze", ["index"], ["indices"], axes=[0]),
             helper.make_node("Gather", ["table", "indices"], ["offset"]),
             helper.make_node("ReduceSum", ["dense"], ["total"], keepdims=1, axes=[1]),
             helper.make_node("Add", ["total", "offset"], ["score"])]
    graph = helper.make_graph(
        nodes, "failing", [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["b", FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b", 1])], initializer=constants)
    # IR 8 (onnx 1.13): the onnxruntime behind the local tritonserver reads up to IR 13.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
    onnx.save(model, str(path / "model.onnx"))
    return path


def make_models(root: Path) -> dict[str, Path]:
    import torch

    good = _mlp()
    shuffled = _mlp()
    order = torch.from_numpy(np.random.default_rng(7).permutation(FEATURES))
    with torch.no_grad():
        shuffled[0].weight.copy_(good[0].weight[:, order])
    models = {"good": _export(good, root / "good" / "1"), "good_copy": _export(good, root / "good-copy" / "1"),
              "shuffled": _export(shuffled, root / "shuffled" / "1"), "failing": _failing(root / "failing" / "1")}
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX model")
    models["broken"] = broken
    rows = np.random.default_rng(11).normal(size=(1024, FEATURES)).astype(np.float32)
    with torch.no_grad():
        scores = good(torch.from_numpy(rows)).numpy()[:, 0]
    labels = (np.random.default_rng(12).random(len(rows)) < 1 / (1 + np.exp(-3 * scores))).astype(np.int64)
    probe = root / "probe" / "probe.npz"
    probe.parent.mkdir(parents=True)
    np.savez(probe, dense=rows, labels=labels)
    models["probe"] = probe
    return models


def main() -> int:
    """`python -m peakserve_harness.rollout_models DIR`: write the models, print their paths as JSON."""
    import json
    import sys

    print(json.dumps({k: str(v) for k, v in make_models(Path(sys.argv[1])).items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
