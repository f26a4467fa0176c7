"""A serving copy of a built Triton model repository for the local, CPU-only ``tritonserver``.

The ``tritonserver`` from the ``nvidia-pytriton`` wheel has only the python backend and there is no
GPU here, so :func:`local_repository` rewrites each ONNX model to be served by the python backend
(``model.py`` = :mod:`peakserve_harness.triton.onnx_model`, which runs the very same ``model.onnx`` with
onnxruntime) on CPU instances. Everything else in the production config is kept as written: io
names, data types and dims, ``max_batch_size``, dynamic batching, version policy and warmup, so
the test proves that the built artifact and its config are servable together.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

MODEL_TEMPLATE = Path(__file__).with_name("onnx_model.py")
THREADS_PARAMETER = "intra_op_threads"  # read by onnx_model.py

_ONNX_BACKEND = re.compile(r'^(\s*)(platform:\s*"onnxruntime_onnx"|backend:\s*"onnxruntime")\s*$',
                           re.MULTILINE)
_PYTHON_BACKEND = re.compile(r'^\s*backend:\s*"python"\s*$', re.MULTILINE)
_PLATFORM_OR_BACKEND = re.compile(r'^\s*(platform|backend):\s*"([^"]*)"', re.MULTILINE)
_KIND_GPU = re.compile(r"\bkind:\s*KIND_GPU\b")
_GPUS = re.compile(r"\bgpus:\s*\[[^\]]*\]")
_DEFAULT_FILENAME = re.compile(r'^\s*default_model_filename:\s*"[^"]*"\s*\n?', re.MULTILINE)


class UnsupportedModel(ValueError):
    """A model in the built repository that the local (python-backend only) server cannot serve."""


def local_config(config: str, *, intra_op_threads: int | None = None) -> tuple[str, bool]:
    """The config rewritten for the local server, and whether the model needs the ONNX wrapper.

    ``platform: "onnxruntime_onnx"`` (or ``backend: "onnxruntime"``) becomes ``backend: "python"``,
    KIND_GPU instance groups become KIND_CPU with the same counts (and lose any ``gpus: [..]``),
    ``default_model_filename`` is dropped (the python backend must load ``model.py``). A model that
    already uses the python backend keeps its own model.py. Any other platform raises.
    """
    onnx = bool(_ONNX_BACKEND.search(config))
    if onnx:
        config = _ONNX_BACKEND.sub(r'\1backend: "python"', config, count=1)
        config = _DEFAULT_FILENAME.sub("", config)
    elif not _PYTHON_BACKEND.search(config):
        found = _PLATFORM_OR_BACKEND.search(config)
        what = f'{found.group(1)} "{found.group(2)}"' if found else "no platform or backend"
        raise UnsupportedModel(f"the local tritonserver has only the python backend; cannot serve "
                               f"a model with {what} (only ONNX and python models)")
    config = _GPUS.sub("", _KIND_GPU.sub("kind: KIND_CPU", config))
    if intra_op_threads is not None:
        if not config.endswith("\n"):
            config += "\n"
        config += (f'parameters {{ key: "{THREADS_PARAMETER}" '
                   f'value: {{ string_value: "{int(intra_op_threads)}" }} }}\n')
    return config, onnx


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)
    return dst


def local_repository(built: Path, dest: Path, *, intra_op_threads: int | None = None) -> Path:
    """Make ``dest`` a repository the local tritonserver can serve, from the built ``built``.

    Each model directory (one with a ``config.pbtxt``) gets its version directories hardlinked (or
    copied), its other files too, the rewritten config (:func:`local_config`) and, for ONNX models,
    ``<version>/model.py`` that runs ``<version>/model.onnx``. Top-level files (``manifest.json``)
    are not copied. ``dest`` must not exist or be empty. Returns ``dest``.
    """
    built, dest = Path(built), Path(dest)
    models = sorted(p for p in built.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file())
    if not models:
        raise UnsupportedModel(f"no model directories (with config.pbtxt) in {built}")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    template = MODEL_TEMPLATE.read_text()
    for model in models:
        config, onnx = local_config((model / "config.pbtxt").read_text(),
                                    intra_op_threads=intra_op_threads)
        out = dest / model.name
        out.mkdir()
        for entry in sorted(model.iterdir()):
            if entry.name == "config.pbtxt":
                continue
            if entry.is_dir():
                shutil.copytree(entry, out / entry.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(entry), str(out / entry.name))
        (out / "config.pbtxt").write_text(config)
        if onnx:
            versions = [v for v in out.iterdir() if v.is_dir() and v.name.isdigit()]
            if not versions:
                raise UnsupportedModel(f"model {model.name} has no version directory in {built}")
            for version in versions:
                if not (version / "model.onnx").is_file():
                    raise UnsupportedModel(f"{model / version.name / 'model.onnx'} is missing")
                script = version / "model.py"
                script.unlink(missing_ok=True)  # never write through a hardlink into `built`
                script.write_text(template)
    return dest
