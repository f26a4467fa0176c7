"""What Triton refuses when it loads a model configuration: the fuzz runs' oracle.

`triton_refusals(config_pbtxt, gpus)` parses the config.pbtxt peakserve rendered with Triton's own protobuf
(tritonclient's model_config_pb2, the same message tritonserver parses) and applies the checks Triton's core
makes before a backend sees the model. They are transcribed from triton-inference-server/core
src/model_config_utils.cc (ValidateModelConfig, ValidateIOShape, ValidateInstanceGroup) and
src/backend_model_instance.cc (the warmup samples), limited to the parts of the config peakserve renders:

- the config parses (a value outside int64, an unknown field or a broken string is a parse error);
- a name, a platform or backend, `max_batch_size >= 0` (int32), a version policy;
- dynamic batching: every preferred batch size is > 0 and <= max_batch_size;
- every input and output: a name, a data type, at least one dimension, each >= 1 or -1 (the wildcard);
- no name twice among the inputs or among the outputs: the core keys them by name, so the model then has
  fewer inputs than its config lists ("expected 2 inputs but got 1");
- instance groups: at least one; KIND_GPU needs a GPU in the container;
- warmup: every dimension concrete, a batch size within max_batch_size, and an element count whose byte size
  fits in int64 (past it the zero sample's size overflows and tritonserver aborts as a whole).

Checked against the real tritonserver of the dev harness (python backend, CPU): dims [4, 0] and [-2] and a
preferred batch size above max_batch_size are refused when the repository is polled, two inputs named x fail
to load, and a warmup of dims [2^40, 2^40] aborts the server ("array is too big").

Two refusals are peakserve's own rules, not Triton's, and say so ("peakserve:"): an output named like an
input (Triton loads it), and a warmup sample above WARMUP_LIMIT_BYTES (Triton allocates it, 40 GB or not).

An empty list means the configuration would load; what then happens depends on the model file, which no spec
can show.
"""

from __future__ import annotations

import math

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
# A warmup sample larger than one request may be over HTTP by default (tritonserver --http-max-input-size,
# 64 MiB) is a load-time allocation nobody asked for: peakserve renders no warmup past it.
WARMUP_LIMIT_BYTES = 64 * 2**20
BYTES = {"TYPE_BOOL": 1, "TYPE_UINT8": 1, "TYPE_INT8": 1, "TYPE_INT16": 2, "TYPE_UINT16": 2, "TYPE_FP16": 2,
         "TYPE_BF16": 2, "TYPE_INT32": 4, "TYPE_UINT32": 4, "TYPE_FP32": 4, "TYPE_INT64": 8, "TYPE_UINT64": 8,
         "TYPE_FP64": 8, "TYPE_STRING": 0}
WILDCARD = -1


def parse(config_pbtxt: str) -> mc.ModelConfig:
    config = mc.ModelConfig()
    text_format.Parse(config_pbtxt, config)
    return config


def _io_refusals(kind: str, io, max_batch_size: int) -> list[str]:
    if not io.name:
        return [f"model {kind} must specify 'name'"]
    out = []
    if io.data_type == mc.TYPE_INVALID:
        out.append(f"model {kind} '{io.name}' must specify 'data_type'")
    if len(io.dims) == 0:
        out.append(f"model {kind} '{io.name}' must specify 'dims'")
    if any(d < 1 and d != WILDCARD for d in io.dims):
        out.append(f"model {kind} '{io.name}' dimension must be integer >= 1, or -1 to indicate a variable-size "
                   f"dimension: {list(io.dims)}")
    return out


def _repeated(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def triton_refusals(config_pbtxt: str, gpus: int) -> list[str]:
    """Why Triton would refuse to load this configuration in a container with `gpus` GPUs; [] if it would not."""
    try:
        config = parse(config_pbtxt)
    except text_format.ParseError as err:
        return [f"config.pbtxt does not parse: {err}"]
    out: list[str] = []
    if not config.name:
        out.append("model configuration must specify 'name'")
    if not config.platform and not config.backend:
        out.append("must specify 'platform' or 'backend'")
    if config.max_batch_size < 0:
        out.append("'max_batch_size' must be non-negative value")
    if not config.HasField("version_policy"):
        out.append("must specify 'version policy'")
    if config.HasField("dynamic_batching"):
        for size in config.dynamic_batching.preferred_batch_size:
            if size <= 0:
                out.append("dynamic batching preferred size must be positive")
            if size > config.max_batch_size:
                out.append(f"dynamic batching preferred size must be <= max batch size ({size} > "
                           f"{config.max_batch_size})")
    for io in config.input:
        out += _io_refusals("input", io, config.max_batch_size)
    for io in config.output:
        out += _io_refusals("output", io, config.max_batch_size)
    inputs, outputs = [io.name for io in config.input], [io.name for io in config.output]
    if _repeated(inputs) or _repeated(outputs):
        out.append(f"tensor names repeat: inputs {inputs}, outputs {outputs}")
    if set(inputs) & set(outputs):
        out.append(f"peakserve: an output has an input's name: {sorted(set(inputs) & set(outputs))}")
    if not config.input or not config.output:
        out.append("a model needs inputs and outputs")
    if len(config.instance_group) == 0:
        out.append("must specify one or more 'instance group's")
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and gpus < 1:
            out.append("instance group has kind KIND_GPU but no GPUs are available")
        if group.count < 1:
            out.append("instance group count must be >= 1")
    out += _warmup_refusals(config)
    return out


def _warmup_refusals(config: mc.ModelConfig) -> list[str]:
    out = []
    declared = {io.name: io for io in config.input}
    for sample in config.model_warmup:
        if sample.batch_size > max(config.max_batch_size, 1):
            out.append(f"warmup batch size {sample.batch_size} exceeds max_batch_size {config.max_batch_size}")
        for name, data in sample.inputs.items():
            if name not in declared:
                out.append(f"warmup input '{name}' is not a model input")
            count = math.prod(data.dims) if data.dims else 1
            if any(d < 0 for d in data.dims):
                out.append(f"warmup setting expects all variable-size dimensions are specified for input '{name}'")
                continue
            size = count * (BYTES[mc.DataType.Name(data.data_type)] or 4) * max(sample.batch_size, 1)  # STRING: int32s
            if size > INT64_MAX:
                out.append(f"warmup input '{name}': {count} elements overflow Triton's int64 byte count")
            elif size > WARMUP_LIMIT_BYTES:
                out.append(f"peakserve: warmup input '{name}': a {size}-byte zero sample to allocate at load time")
    return out
