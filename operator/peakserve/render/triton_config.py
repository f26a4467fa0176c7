"""Triton's model configuration (config.pbtxt), rendered from the spec."""

from __future__ import annotations

import hashlib
import math

from ..api.spec import ModelDeploymentSpec, Tensor

PLATFORM = {
    "onnx": 'platform: "onnxruntime_onnx"',
    "torchscript": 'platform: "pytorch_libtorch"',
    "pytorch": 'backend: "python"',
}


def _tensor(t: Tensor) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    return f'  {{\n    name: "{t.name}"\n    data_type: TYPE_{t.data_type}\n    dims: [ {dims} ]\n  }}'


# Triton allocates a warmup sample's zeros when it loads the model. Past what one HTTP request may carry by
# default (tritonserver --http-max-input-size, 64 MiB) that is an allocation nobody asked for, and for large
# enough dims an overflow of Triton's int64 byte count, which aborts tritonserver. Such a model gets none.
WARMUP_MAX_BYTES = 64 * 2**20
ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "INT16": 2, "FP16": 2, "BF16": 2, "INT32": 4, "FP32": 4,
                 "INT64": 8, "FP64": 8}


def _warmup(spec: ModelDeploymentSpec) -> str | None:
    """One zero-filled warmup request: Triton then reports the model ready only once it is warm.

    Warmup needs concrete shapes, so a model with a variable (-1) input dimension gets none; so does one whose
    zero sample would exceed WARMUP_MAX_BYTES.
    """
    inputs = spec.model.inputs
    if any(d < 1 for t in inputs for d in t.dims) or any(t.data_type == "STRING" for t in inputs) or \
            any(math.prod(t.dims) * ELEMENT_BYTES[t.data_type] > WARMUP_MAX_BYTES for t in inputs):
        return None
    entries = "\n".join(
        f'    inputs {{ key: "{t.name}" value: {{ data_type: TYPE_{t.data_type} '
        f'dims: [ {", ".join(map(str, t.dims))} ] zero_data: true }} }}' for t in inputs)
    batch = 1 if spec.model.max_batch_size > 0 else 0
    return f'model_warmup [\n  {{\n    name: "zero"\n    batch_size: {batch}\n{entries}\n  }}\n]'


def render_config_pbtxt(spec: ModelDeploymentSpec) -> str:
    model, serving = spec.model, spec.serving
    lines = [
        f'name: "{model.name}"',
        PLATFORM[model.format],
        f"max_batch_size: {model.max_batch_size}",
        f"version_policy: {{ specific: {{ versions: [ {model.version} ] }} }}",
        "input [\n" + ",\n".join(_tensor(t) for t in model.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(t) for t in model.outputs) + "\n]",
        "instance_group [\n" + ",\n".join(
            f"  {{ kind: KIND_{g.kind} count: {g.count} }}" for g in serving.instance_groups) + "\n]",
    ]
    batching = serving.dynamic_batching
    if batching.enabled and model.max_batch_size > 0:
        preferred = ""
        if batching.preferred_batch_sizes:
            preferred = f" preferred_batch_size: [ {', '.join(map(str, batching.preferred_batch_sizes))} ]"
        lines.append(f"dynamic_batching {{{preferred} max_queue_delay_microseconds: "
                     f"{batching.max_queue_delay_microseconds} }}")
    warmup = _warmup(spec)
    if warmup:
        lines.append(warmup)
    return "\n".join(lines) + "\n"


def config_hash(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()[:16]
