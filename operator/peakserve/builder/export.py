"""torch -> fp32 ONNX, and the check that the export computes what torch computes.

The fp32 ONNX model is the reference every candidate is gated against, so the export itself
is checked first: max |torch - ONNX Runtime| on the evaluation set must stay within
gates.exportTolerance.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..api.spec import ModelSpec
from .errors import BuildError
from .progress import Progress
from .signature import check_onnx_graph, check_outputs

OPSET = 17  # onnxruntime_onnx in Triton 25.x runs opset 17+; quantize_static's QDQ needs >= 13
TORCH_CHUNK_ROWS = 1024


def _as_list(result: Any, model: ModelSpec) -> list:
    """A forward() result as a list in spec.model.outputs order."""
    if isinstance(result, dict):
        missing = [t.name for t in model.outputs if t.name not in result]
        if missing:
            raise BuildError("SignatureMismatch", f"torch model returned keys {sorted(result)}, "
                                                  f"expected outputs {[t.name for t in model.outputs]}")
        return [result[t.name] for t in model.outputs]
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]


def torch_outputs(module, inputs: dict[str, np.ndarray], model: ModelSpec, progress: Progress) -> list[np.ndarray]:
    """The fp32 torch reference on every row. forward() takes the inputs positionally, in spec order."""
    import torch

    rows = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = [[] for _ in model.outputs]
    with torch.inference_mode(), progress.counter("torch reference rows", rows) as bar:
        for start in range(0, rows, TORCH_CHUNK_ROWS):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name][start:start + TORCH_CHUNK_ROWS]))
                    for t in model.inputs]
            try:
                result = module(*args)
            except Exception as err:
                raise BuildError("SignatureMismatch", f"torch model failed on the evaluation inputs "
                                                      f"{[t.name for t in model.inputs]}: {type(err).__name__}: "
                                                      f"{str(err).splitlines()[0][:300] if str(err) else ''}") from None
            outs = [o.detach().cpu().numpy() if hasattr(o, "detach") else np.asarray(o)
                    for o in _as_list(result, model)]
            if start == 0:
                check_outputs(outs, model.outputs, "torch model")
            for i, o in enumerate(outs):
                parts[i].append(o)
            bar.advance(len(args[0]))
    return [np.concatenate(p) for p in parts]


def export_onnx(module, example: dict[str, np.ndarray], model: ModelSpec, path: Path,
                progress: Progress) -> str:
    """Export with the spec's tensor names and a dynamic batch axis; returns the exporter used.

    The TorchScript-based exporter (dynamo=False) goes first: for small MLP/embedding models it is
    fast and dependable. torch.export-based (dynamo=True) is the fallback for what it cannot trace.
    """
    import onnx
    import torch

    names_in = [t.name for t in model.inputs]
    names_out = [t.name for t in model.outputs]
    dynamic_axes = {}
    for t in (*model.inputs, *model.outputs):
        axes = {0: "batch"}
        axes.update({i + 1: f"{t.name}_dim{i + 1}" for i, d in enumerate(t.dims) if d == -1})
        dynamic_axes[t.name] = axes
    args = tuple(torch.from_numpy(example[n]) for n in names_in)
    errors = []
    for dynamo in (False, True):
        try:
            path.unlink(missing_ok=True)
            chatter = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
                # Both are deliberate: the legacy exporter warns that it is legacy, and the
                # TorchScript loader that TorchScript is deprecated.
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        message=".*legacy TorchScript-based ONNX export")
                warnings.filterwarnings("ignore", category=DeprecationWarning, message="The feature will be removed")
                warnings.filterwarnings("ignore", category=UserWarning, message=".*no signature found")
                warnings.filterwarnings("ignore", category=UserWarning, message=".*axis name.*will not be used")
                torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                                  dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=dynamo)
            onnx.checker.check_model(str(path))
            return "dynamo" if dynamo else "torchscript"
        except Exception as err:
            text = str(err).strip().splitlines()
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(err).__name__}: "
                          f"{(text[0] if text else '')[:300]}")
            progress.note(f"export failed with the {errors[-1]}")
    raise BuildError("InvalidModel", "torch.onnx.export failed: " + "; ".join(errors))


def check_exported(path: Path, model: ModelSpec) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    check_onnx_graph(graph, model, "exported ONNX graph")


def example_rows(inputs: dict[str, np.ndarray], rows: int = 4) -> dict[str, np.ndarray]:
    """A few rows for tracing: more than one, so that batch-1 shortcuts (squeeze) do not get baked in."""
    n = len(next(iter(inputs.values())))
    index = np.arange(rows) % n
    return {name: np.ascontiguousarray(a[index]) for name, a in inputs.items()}

