"""run_build: one model build from source files to a published, gated Triton model repository.

    inputs -> fp32 reference -> fp32 ONNX (+ export check) -> candidates -> accuracy gate
           -> speed gate -> choice -> atomic publish with a manifest

Every step is recorded (timings, figures, verdicts) in manifest.json next to the model, so a
served artifact always carries the evidence it was chosen on. The version directory also gets
probe.npz: up to 8192 evaluation rows (and labels), the batch `peakserve analyze` sends to the
stable and the canary pods when this artifact rolls out.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .probe_data import FILENAME as PROBE_FILE, write_probe
from ..api.spec import ModelDeploymentSpec
from ..render.triton_config import render_config_pbtxt
from . import accuracy, candidates as cands, export, repository, sources, speed
from .environment import host_info, tool_versions
from .errors import BuildError
from ..api.identity import build_hash, build_inputs
from .progress import Progress, utc_now
from ..redact import redact_text
from .runtime import CPU, CUDA, DEFAULT_THREADS, effective_providers, run_dataset
from .signature import check_buildable, check_onnx_graph

SUMMARY_LIMIT_BYTES = 3500  # the summary becomes a termination message; Kubernetes keeps 4096 bytes
FP32 = "fp32"


@dataclass
class BuildResult:
    hash: str
    phase: str                      # "Succeeded" | "Failed"
    reason: str                     # GatesPassed, Fp32Fallback, or a BuildError reason
    message: str
    candidate: str | None           # fp32 | int8Dynamic | int8Static | fp16
    precision: str | None           # fp32 | int8 | fp16
    artifact: str | None            # published directory relative to out_root: "<hash>"
    digest: str | None              # "sha256:<hex>" of the published model.onnx
    figures: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    # Per-candidate figures for the human summary table; not part of the termination message.
    details: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def failed(cls, hash: str, reason: str, message: str) -> "BuildResult":
        return cls(hash=hash, phase="Failed", reason=reason, message=message, candidate=None, precision=None,
                   artifact=None, digest=None)

    def summary(self) -> dict[str, Any]:
        """JSON-able, camelCase, credentials redacted, and json.dumps() under SUMMARY_LIMIT_BYTES."""
        # Shrink in steps: long texts first, then figures beyond the headline ones.
        for message_len, reason_len, keep_all_figures in ((1500, 400, True), (600, 160, True),
                                                          (300, 100, False), (160, 60, False), (80, 20, False)):
            figures = self.figures if keep_all_figures else {
                k: v for k, v in self.figures.items() if k in HEADLINE_FIGURES}
            out = {
                "hash": self.hash, "phase": self.phase, "reason": self.reason,
                "message": _clip(redact_text(self.message), message_len),
                "candidate": self.candidate, "precision": self.precision, "artifact": self.artifact,
                "digest": self.digest,
                "figures": {k: _json_number(v) for k, v in figures.items()},
                "rejected": {k: _clip(redact_text(v), reason_len) for k, v in list(self.rejected.items())[:8]},
                "cached": self.cached,
            }
            if len(json.dumps(out)) <= SUMMARY_LIMIT_BYTES:
                return out
        out["figures"], out["rejected"] = {}, {k: "" for k in out["rejected"]}
        return out

    @classmethod
    def from_summary(cls, summary: dict[str, Any], **extra: Any) -> "BuildResult":
        return cls(hash=summary["hash"], phase=summary["phase"], reason=summary["reason"],
                   message=summary.get("message", ""), candidate=summary.get("candidate"),
                   precision=summary.get("precision"), artifact=summary.get("artifact"),
                   digest=summary.get("digest"), figures=dict(summary.get("figures") or {}),
                   rejected=dict(summary.get("rejected") or {}), **extra)


HEADLINE_FIGURES = ("speedup", "maxAbsDiff", "p99AbsDiff", "aucDelta", "loglossDelta", "topKAgreement",
                    "minCosine", "recallAtK")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_number(value: float) -> float | str:
    """JSON has no NaN/Infinity; Kubernetes would refuse the status patch. Keep them as strings."""
    value = float(value)
    return value if value == value and abs(value) != float("inf") else str(value)


def gate_batch_sizes(spec: ModelDeploymentSpec) -> list[int]:
    """The speed gate's batch sizes: build.batchSizes, or (empty) 1, 32 and model.maxBatchSize."""
    if hasattr(spec, "build_batch_sizes"):  # the spec owns the default; keep one definition of it
        sizes = list(spec.build_batch_sizes())
    else:
        largest = max(spec.model.max_batch_size, 1)
        sizes = sorted({min(b, largest) for b in (spec.build.batch_sizes or [1, 32, largest])})
    return sizes or [1]


def default_providers(spec: ModelDeploymentSpec) -> list[str]:
    """Measure on what serves: CUDA (when this onnxruntime has it) for GPU serving, else the CPU."""
    return [CUDA, CPU] if cands.serves_on_gpu(spec) else [CPU]


def run_build(spec: ModelDeploymentSpec, source_dir: Path, out_root: Path, *, quiet: bool = False,
              providers: list[str] | None = None, threads: int = DEFAULT_THREADS,
              speed_budget: speed.SpeedBudget | None = None, progress: Progress | None = None) -> BuildResult:
    """Build, gate and publish spec's model; returns the result, or raises BuildError.

    source_dir holds spec.build.source's files; out_root is the artifact store directory.
    A build whose manifest already exists under out_root/<hash> is not repeated (cached=True).
    """
    if spec.build is None:
        raise BuildError("InvalidSpec", "spec.build is not set: there is nothing to build")
    source_dir, out_root = Path(source_dir), Path(out_root)
    build_id = build_hash(spec)
    progress = progress or Progress(quiet=quiet)

    recorded = repository.read_manifest(out_root, build_id)
    if recorded and isinstance(recorded.get("result"), dict):
        progress.write(f"build {build_id} already published: using it")
        return BuildResult.from_summary(recorded["result"], cached=True, details=_details(recorded))

    repository.check_writable(out_root)
    staging = repository.make_staging(out_root, build_id)
    try:
        return _Build(spec, build_id, source_dir, out_root, staging, progress,
                      providers or default_providers(spec), threads, speed_budget or speed.SpeedBudget()).run()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _details(manifest: dict) -> dict:
    """The summary table's data, from a published manifest (a cache hit)."""
    return {"candidates": manifest.get("candidates", {}),
            "batchSizes": manifest.get("speed", {}).get("batchSizes", []), "export": manifest.get("export", {})}


class _Build:
    """The state of one build while it runs; run() is the whole pipeline."""

    def __init__(self, spec, build_id, source_dir, out_root, staging, progress, providers, threads, budget):
        self.spec, self.build, self.hash = spec, spec.build, build_id
        self.source_dir, self.out_root, self.progress = source_dir, out_root, progress
        self.repo, self.work = staging / "repo", staging / "work"
        self.work.mkdir()
        self.requested, self.providers = list(providers), effective_providers(providers)
        self.threads, self.budget = threads, budget
        self.output_names = [t.name for t in spec.model.outputs]
        self.batch_sizes = gate_batch_sizes(spec)
        self.started, self.t0 = utc_now(), time.monotonic()
        self.manifest: dict[str, Any] = {}

    # -- steps ---------------------------------------------------------------------------------

    def run(self) -> BuildResult:
        step = self.progress.step
        self.progress.write(f"build {self.hash}: {self.spec.model.name} ({self.build.source.format}, "
                            f"task {self.build.task}, candidates {list(self.build.candidates)})")
        with step("checking inputs"):
            check_buildable(self.spec.model, self.build.task)
            files = sources.resolve_files(self.build.source, self.source_dir)
            evaluation, calibration = self._load_data(files)
        fp32 = self.work / "fp32.onnx"
        with step("loading model"):
            if self.build.source.format == "onnx":
                model = sources.load_onnx_model(files.model)
                check_onnx_graph(model.graph, self.spec.model, f"model file {files.model.name}")
                # Saved, not copied: external weight files, if any, were loaded and are written inline.
                sources.save_onnx_model(model, fp32)
                module = None
            else:
                module = sources.load_torch_model(self.build.source, files)
        reference = self._fp32_reference(module, evaluation, fp32)

        # report: everything known about each candidate (manifest); rejected: one line per loser.
        report: dict[str, dict[str, Any]] = {}
        rejected: dict[str, str] = {}
        made = self._make_candidates(fp32, calibration, report, rejected)
        accurate = self._accuracy_gate(made, reference, evaluation, report, rejected)
        fast = self._speed_gate(fp32, made, accurate, evaluation, report, rejected)
        result, served = self._choose(fast, made, fp32, report, rejected)
        with step("publishing"):
            return self._publish(files, served, result, report, evaluation)

    def _details(self, report: dict) -> dict:
        return {"candidates": report, "batchSizes": list(self.batch_sizes), "export": self.manifest.get("export", {})}

    def _load_data(self, files: sources.SourceFiles):
        model, wants_static = self.spec.model, "int8Static" in self.build.candidates
        # Cheap existence checks first: a missing file must fail before any model is loaded.
        if not files.evaluation.is_file():
            raise BuildError("MissingEvaluationData", f"evaluation data {self.build.source.evaluation_data} not "
                                                      "found in the source directory; the gates need held-out data")
        if wants_static and not files.calibration.is_file():
            raise BuildError("MissingCalibrationData",
                             f"int8Static needs calibration data, but {self.build.source.calibration_data} is not in "
                             "the source directory; refusing to calibrate on random data (add the file, or drop "
                             "int8Static from build.candidates)")
        evaluation = sources.load_dataset(files.evaluation, model, role="evaluation", reason="MissingEvaluationData",
                                          want_label=self.build.task == "ranker")
        calibration = None
        if files.calibration.is_file():
            calibration = sources.load_dataset(files.calibration, model, role="calibration",
                                               reason="MissingCalibrationData")
        data: dict[str, Any] = {"evaluationRows": evaluation.rows,
                                "calibrationRows": calibration.rows if calibration else None, "warnings": []}
        if calibration is not None:
            overlap = sources.overlapping_rows(calibration, evaluation)
            data["overlappingRows"] = overlap
            if overlap:
                data["warnings"].append(f"{overlap} of {evaluation.rows} evaluation rows also occur in the "
                                        "calibration set: the accuracy gate is optimistic for int8Static")
                self.progress.note("warning: " + data["warnings"][-1])
        self.manifest["data"] = data
        self.progress.note(f"evaluation rows {evaluation.rows}, calibration rows {data['calibrationRows']}")
        return evaluation, calibration

    def _fp32_reference(self, module, evaluation: sources.Dataset, fp32: Path) -> list:
        """The fp32 ONNX outputs every candidate is compared with (after checking the export, for torch)."""
        step = self.progress.step
        if module is None:
            self.manifest["export"] = {"exporter": None, "skipped": "source format onnx: the model is already "
                                                                    "fp32 ONNX, there is no torch reference"}
        else:
            with step("fp32 torch reference"):
                torch_out = export.torch_outputs(module, evaluation.inputs, self.spec.model, self.progress)
            with step("exporting fp32 ONNX"):
                exporter = export.export_onnx(module, export.example_rows(evaluation.inputs), self.spec.model, fp32,
                                              self.progress)
                export.check_exported(fp32, self.spec.model)
            with step("export check (torch vs ONNX Runtime, CPU)"):
                onnx_out = run_dataset(fp32, evaluation.inputs, self.output_names, [CPU], self.threads,
                                       what="exported fp32 ONNX")
                worst, _ = accuracy.abs_diff_stats(torch_out, onnx_out)
                tolerance = self.build.gates.export_tolerance
                self.manifest["export"] = {"exporter": exporter, "opset": export.OPSET, "maxAbsDiff": worst,
                                           "tolerance": tolerance}
                self.progress.note(f"max |torch - onnx| = {worst:.3g} (tolerance {tolerance:g})")
                if not worst <= tolerance:
                    raise BuildError("ExportMismatch", f"the fp32 ONNX export differs from torch by up to {worst:.3g} "
                                                       f"> exportTolerance {tolerance:g} on the evaluation set")
            if self.providers == [CPU]:
                return onnx_out
        with step(f"fp32 ONNX reference ({', '.join(self.providers)})"):
            return run_dataset(fp32, evaluation.inputs, self.output_names, self.providers, self.threads,
                               what=f"fp32 model {self.build.source.file}")

    def _make_candidates(self, fp32: Path, calibration, report: dict,
                         rejected: dict) -> dict[str, cands.CandidateModel]:
        """Make each configured candidate; one that cannot be made is rejected, the build goes on."""
        made: dict[str, cands.CandidateModel] = {}
        wanted = list(self.build.candidates)
        prepared, notes = fp32, {}
        if any(c.startswith("int8") for c in wanted):
            with self.progress.step("preparing for quantization (quant_pre_process)"):
                prepared = self.work / "fp32.pre.onnx"
                notes = cands.prepare_for_quantization(fp32, prepared)
                if not notes["preProcessed"]:
                    self.progress.note("quant_pre_process failed, quantizing the plain export: "
                                       + notes["preProcessError"])
        self.manifest["quantization"] = notes
        for name in wanted:
            why = cands.fp16_refusal(self.spec, self.requested) if name == "fp16" else None
            if why is None:
                with self.progress.step(f"making {name}"):
                    out = self.work / f"{name}.onnx"
                    try:
                        if name == "int8Dynamic":
                            made[name] = cands.make_int8_dynamic(prepared, out)
                        elif name == "int8Static":
                            made[name] = cands.make_int8_static(prepared, out, calibration.inputs, self.progress)
                        else:
                            made[name] = cands.make_fp16(fp32, out)
                        report[name] = {"notes": made[name].notes}
                        continue
                    except Exception as err:  # one broken quantizer rejects its candidate, not the build
                        text = str(err).strip().splitlines()
                        why = f"{name} failed: {type(err).__name__}: {(text[0] if text else '')[:300]}"
            self.progress.note(f"{name} rejected: {why}")
            rejected[name] = why
            report[name] = {"verdict": "rejected", "stage": "build", "reason": why}
        return made

    def _accuracy_gate(self, made: dict, reference: list, evaluation: sources.Dataset, report: dict,
                       rejected: dict) -> list[str]:
        """Each candidate's outputs on the evaluation set against fp32; returns the names that pass."""
        passing = []
        for name, candidate in made.items():
            entry = report[name]
            with self.progress.step(f"accuracy gate: {name}"):
                try:
                    outputs = run_dataset(candidate.path, evaluation.inputs, self.output_names, self.providers,
                                          self.threads, what=f"candidate {name}")
                except BuildError as err:
                    failures = [f"does not run: {err.message}"]
                else:
                    figures = accuracy.accuracy_figures(self.build.task, reference, outputs, evaluation.labels,
                                                        self.build.gates.k)
                    failures = accuracy.accuracy_failures(self.build.task, figures, self.build.gates)
                    entry.update(accuracy=figures, accuracyFailures=failures)
                    self.progress.note(_short_figures(figures))
            if failures:
                rejected[name] = "accuracy: " + "; ".join(failures)
                entry.update(verdict="rejected", stage="accuracy", reason=rejected[name])
                self.progress.note(f"{name} rejected: {rejected[name]}")
            else:
                passing.append(name)
        return passing

    def _speed_gate(self, fp32: Path, made: dict, names: list[str], evaluation: sources.Dataset,
                    report: dict, rejected: dict) -> list[str]:
        """Time fp32 and the accuracy-passing candidates together; returns the names that pass."""
        self.manifest["speed"] = {"providers": self.providers, "threads": self.threads,
                                  "batchSizes": self.batch_sizes, "budget": dataclasses.asdict(self.budget)}
        if not names:
            return []
        models = {FP32: fp32, **{n: made[n].path for n in names}}
        with self.progress.step(f"speed gate: {', '.join(models)} at batch sizes {list(self.batch_sizes)}"):
            results = speed.measure(models, evaluation.first, self.batch_sizes, self.providers,
                                    threads=self.threads, budget=self.budget, progress=self.progress)
        self.manifest["speed"]["fp32"] = results[FP32]
        on_gpu, measured_on_gpu = cands.serves_on_gpu(self.spec), CUDA in self.providers
        passing = []
        for name in names:
            per_batch = speed.speedups(results, name)
            failures = speed.speed_failures(per_batch, self.build.gates.min_speedup,
                                                 self.build.gates.min_batch_speedup)
            if on_gpu and not measured_on_gpu:
                # Int8 kernels that are fast on this CPU may fall back to the CPU under CUDA: only
                # timings on the serving hardware can justify serving them on a GPU.
                failures.append("serving is on GPU but the speed gate ran on CPU (CUDAExecutionProvider "
                                "unavailable): CPU timings do not predict GPU serving; set build.gpus")
            entry = report[name]
            entry.update(speed=results[name], speedFigures=speed.speed_figures(per_batch), speedFailures=failures)
            self.progress.note(f"{name}: " + ", ".join(f"b{b} {s:.2f}x" for b, s in per_batch.items()))
            if failures:
                rejected[name] = "speed: " + "; ".join(failures)
                entry.update(verdict="rejected", stage="speed", reason=rejected[name])
                self.progress.note(f"{name} rejected: {rejected[name]}")
            else:
                passing.append(name)
        return passing

    def _choose(self, passing: list[str], made: dict, fp32: Path, report: dict,
                rejected: dict) -> tuple[BuildResult, Path]:
        """The fastest candidate that passed both gates; else fp32 (if allowed) or GateFailed."""
        chosen = max(passing, key=lambda n: report[n]["speedFigures"]["speedup"], default=None)
        for name in passing:
            report[name]["verdict"] = "chosen" if name == chosen else "passed"
            if name != chosen:
                rejected[name] = (f"passed, but {chosen} is faster ({report[chosen]['speedFigures']['speedup']:.2f}x "
                                  f"vs {report[name]['speedFigures']['speedup']:.2f}x)")
        # Rejections in the order the spec lists the candidates.
        ordered = {n: rejected[n] for n in self.build.candidates if n in rejected}
        listing = "; ".join(f"{n}: {r}" for n, r in ordered.items())
        if chosen is None:
            if not self.build.allow_fp32_fallback:
                raise BuildError("GateFailed", "no candidate passed the gates and allowFp32Fallback is false: "
                                 + (listing or "build.candidates is empty"), details=self._details(report))
            reason, served, figures = "Fp32Fallback", fp32, {"speedup": 1.0}
            message = f"no candidate passed the gates; serving fp32 (allowFp32Fallback). {listing}".strip()
        else:
            reason, served = "GatesPassed", made[chosen].path
            figures = {**report[chosen]["accuracy"], **report[chosen]["speedFigures"]}
            message = (f"{chosen} chosen: {figures['speedup']:.2f}x fp32 throughput (geometric mean over batch "
                       f"sizes {list(self.batch_sizes)}), maxAbsDiff {figures['maxAbsDiff']:.3g}")
        if "maxAbsDiff" in self.manifest.get("export", {}):
            figures["exportMaxAbsDiff"] = self.manifest["export"]["maxAbsDiff"]
        name = chosen or FP32
        return BuildResult(hash=self.hash, phase="Succeeded", reason=reason, message=message, candidate=name,
                           precision=cands.PRECISION[name], artifact=self.hash, digest=None,
                           figures={k: _significant(v) for k, v in figures.items()}, rejected=ordered), served

    def _publish(self, files: sources.SourceFiles, model_path: Path, result: BuildResult,
                 report: dict, evaluation: sources.Dataset) -> BuildResult:
        """Write the repository and its manifest into staging, then rename it into place."""
        model = self.spec.model
        model_dir = self.repo / model.name
        version_dir = model_dir / str(model.version)
        version_dir.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(render_config_pbtxt(self.spec))
        shutil.copyfile(model_path, version_dir / "model.onnx")
        # The canary analysis' default probe: evaluation rows that stable and canary both answer.
        # Beside model.onnx, so it travels with the version Triton mounts (Triton ignores it).
        rows = write_probe(version_dir / PROBE_FILE, evaluation.inputs, evaluation.labels)
        self.manifest["probe"] = {"path": f"{model.name}/{model.version}/{PROBE_FILE}", "rows": rows,
                                  "labels": evaluation.labels is not None}
        outputs = {str(p.relative_to(self.repo)): sources.sha256_file(p)
                   for p in sorted(self.repo.rglob("*")) if p.is_file()}
        result.digest = outputs[f"{model.name}/{model.version}/model.onnx"]
        result.details = self._details(report)
        inputs = {}
        for role, path in files.as_dict().items():
            if path.is_file():
                inputs[role] = {"path": str(path.relative_to(self.source_dir.resolve())),
                                "sha256": sources.sha256_file(path)}
        self.manifest.update({
            "result": result.summary(),
            "inputs": build_inputs(self.spec),
            "files": {"inputs": inputs, "outputs": outputs},
            "candidates": report,
            "choice": {"candidate": result.candidate, "reason": result.reason, "message": result.message,
                       "rejected": result.rejected},
            "tools": tool_versions(),
            "host": host_info(),
            "providers": {"requested": self.requested, "used": self.providers},
        })
        self.manifest["steps"] = self.progress.timings()
        self.manifest.update(startedAt=self.started, finishedAt=utc_now(),
                             seconds=round(time.monotonic() - self.t0, 3))
        manifest = {"hash": self.hash, **self.manifest}
        repository.write_json(self.repo / repository.MANIFEST, _jsonable(manifest))
        repository.publish(self.repo, self.out_root, self.hash)
        self.progress.note(f"published {self.hash} ({result.candidate}, {result.digest})")
        return result


def _significant(value: float, digits: int = 6) -> float:
    """Rounded to significant digits, so that a tiny difference (1e-8) does not round to zero."""
    return float(f"{value:.{digits}g}")


def _short_figures(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if k in HEADLINE_FIGURES)


def _jsonable(value: Any) -> Any:
    """Manifest values as strict JSON: int keys become strings, NaN/inf become strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, Path):
        return str(value)
    return value
