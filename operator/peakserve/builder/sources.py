"""Load what a build starts from: the model (TorchScript, a PyTorch factory + state dict, or ONNX)
and the calibration/evaluation data (.npz), each checked against the spec's signature."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..api.spec import BuildSource, ModelSpec
from .errors import BuildError
from .signature import check_array

LABEL = "label"  # the evaluation set's click/relevance column for rankers


@dataclass(frozen=True)
class SourceFiles:
    """Absolute paths of the build's inputs inside source_dir."""

    model: Path
    factory: Path | None
    factory_function: str | None
    calibration: Path
    evaluation: Path

    def as_dict(self) -> dict[str, Path]:
        files = {"model": self.model, "calibration": self.calibration, "evaluation": self.evaluation}
        if self.factory is not None:
            files["factory"] = self.factory
        return files


def _inside(source_dir: Path, relative: str, reason: str, what: str) -> Path:
    root = source_dir.resolve()
    path = (root / relative).resolve()
    # A relative path may not climb out of the source directory (../../etc/...).
    if path != root and root not in path.parents:
        raise BuildError(reason, f"{what} {relative!r} points outside the source directory")
    return path


def resolve_files(source: BuildSource, source_dir: Path) -> SourceFiles:
    factory, function = None, None
    if source.format == "pytorch":
        if not source.factory:
            raise BuildError("InvalidSpec", "build.source.format pytorch needs build.source.factory (FILE.py:FUNCTION)")
        factory_file, function = source.factory.rsplit(":", 1)
        factory = _inside(source_dir, factory_file, "InvalidModel", "build.source.factory file")
    return SourceFiles(
        model=_inside(source_dir, source.file, "InvalidModel", "build.source.file"),
        factory=factory, factory_function=function,
        calibration=_inside(source_dir, source.calibration_data, "MissingCalibrationData",
                            "build.source.calibrationData"),
        evaluation=_inside(source_dir, source.evaluation_data, "MissingEvaluationData",
                           "build.source.evaluationData"),
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


# --- data -----------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Input arrays by tensor name (one row per sample), and the labels when the file has them."""

    path: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.rows, size):
            yield {name: a[start:start + size] for name, a in self.inputs.items()}

    def first(self, n: int) -> dict[str, np.ndarray]:
        """The first n rows, repeated when the set is smaller (the speed gate needs full batches)."""
        index = np.arange(n) % self.rows
        return {name: np.ascontiguousarray(a[index]) for name, a in self.inputs.items()}


def load_dataset(path: Path, model: ModelSpec, *, role: str, reason: str, want_label: bool = False) -> Dataset:
    """Read a .npz of input arrays (+ `label`) and check it against the signature.

    role is "calibration" or "evaluation"; reason the BuildError reason when the file is missing.
    """
    if not path.is_file():
        raise BuildError(reason, f"{role} data {path.name} not found in the source directory")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise BuildError(reason, f"{role} data {path.name} cannot be read as .npz: {err}") from None
    missing = [t.name for t in model.inputs if t.name not in arrays]
    if missing:
        raise BuildError(reason, f"{role} data {path.name} has no array for input(s) {missing} "
                                 f"(found {sorted(arrays)})")
    inputs = {t.name: arrays[t.name] for t in model.inputs}
    for t in model.inputs:
        check_array(inputs[t.name], t, f"{role} data {path.name}")
    rows = {name: len(a) for name, a in inputs.items()}
    if len(set(rows.values())) != 1:
        raise BuildError("SignatureMismatch", f"{role} data {path.name}: arrays have different row counts {rows}")
    if next(iter(rows.values())) < 2:
        raise BuildError(reason, f"{role} data {path.name} has fewer than 2 rows")
    labels = None
    if want_label:
        if LABEL not in arrays:
            raise BuildError(reason, f"{role} data {path.name} has no {LABEL!r} array; the ranker gate "
                                     "measures AUC and logloss against labels")
        labels = np.asarray(arrays[LABEL]).reshape(-1).astype(np.float64)
        if len(labels) != next(iter(rows.values())):
            raise BuildError(reason, f"{role} data {path.name}: {len(labels)} labels for "
                                     f"{next(iter(rows.values()))} rows")
        if not np.isin(labels, (0.0, 1.0)).all() or len(np.unique(labels)) < 2:
            raise BuildError(reason, f"{role} data {path.name}: {LABEL!r} must hold both 0 and 1 "
                                     "(AUC is undefined otherwise)")
    return Dataset(path=path, inputs=inputs, labels=labels)


def overlapping_rows(calibration: Dataset, evaluation: Dataset) -> int:
    """Evaluation rows identical (all inputs) to some calibration row: they make the gate optimistic."""
    def keys(data: Dataset) -> Iterator[bytes]:
        flat = [np.ascontiguousarray(a).reshape(len(a), -1) for a in data.inputs.values()]
        for i in range(data.rows):
            yield hashlib.blake2b(b"".join(f[i].tobytes() for f in flat), digest_size=16).digest()
    seen = set(keys(calibration))
    return sum(1 for k in keys(evaluation) if k in seen)


# --- models ---------------------------------------------------------------------------------

def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise BuildError("InvalidModel", f"{what} {path.name} not found in the source directory")


def load_torch_model(source: BuildSource, files: SourceFiles):
    """The torch.nn.Module to export, in eval mode."""
    import torch

    _require_file(files.model, "model file")
    if source.format == "torchscript":
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.export, but it is what users ship.
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
                module = torch.jit.load(str(files.model), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError, ValueError, zip errors...
            raise BuildError("InvalidModel", f"model file {files.model.name} is not a loadable TorchScript "
                                             f"archive: {type(err).__name__}: {_first_line(err)}") from None
        return module.eval()

    # format pytorch: build the module with the user's factory, then load the state dict into it.
    assert files.factory is not None and files.factory_function is not None
    _require_file(files.factory, "factory file")
    module = _call_factory(files.factory, files.factory_function)
    try:
        # weights_only: a state dict is tensors; refuse pickled code in the weights file.
        state = torch.load(str(files.model), map_location="cpu", weights_only=True)
    except Exception as err:
        raise BuildError("InvalidModel", f"model file {files.model.name} is not a loadable state dict: "
                                         f"{type(err).__name__}: {_first_line(err)}") from None
    if not isinstance(state, dict):
        raise BuildError("InvalidModel", f"model file {files.model.name} holds a {type(state).__name__}, "
                                         "not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except Exception as err:
        raise BuildError("InvalidModel", f"state dict {files.model.name} does not fit the module from "
                                         f"{files.factory.name}: {_first_line(err)}") from None
    return module.eval()


def _call_factory(path: Path, function: str):
    import torch

    name = f"peakserve_build_factory_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path.name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        factory = getattr(module, function)
        built = factory()
    except Exception as err:
        raise BuildError("InvalidModel", f"factory {path.name}:{function} failed: "
                                         f"{type(err).__name__}: {_first_line(err)}") from None
    if not isinstance(built, torch.nn.Module):
        raise BuildError("InvalidModel", f"factory {path.name}:{function} returned a {type(built).__name__}, "
                                         "not a torch.nn.Module")
    return built


def load_onnx_model(path: Path):
    """An fp32 ONNX model (format onnx), checked by the ONNX checker."""
    import onnx

    _require_file(path, "model file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise BuildError("InvalidModel", f"model file {path.name} is not a valid ONNX model: "
                                         f"{type(err).__name__}: {_first_line(err)}") from None
    return model


def save_onnx_model(model, path: Path) -> None:
    import onnx

    if model.ByteSize() >= PROTOBUF_LIMIT:
        raise BuildError("InvalidModel", "the ONNX model is 2 GB or larger; the builder handles single-file "
                                         "models under the protobuf limit only")
    onnx.save(model, str(path))


PROTOBUF_LIMIT = 2**31 - 1


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else "")[:limit]
