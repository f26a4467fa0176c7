"""Model build benchmark: fp32 vs the builder's candidates on CPU, and Triton with vs without dynamic batching.

Each sample (model_repo/ranker, model_repo/encoder) is built for CPU serving: the example spec with serving.gpus 0,
one KIND_CPU instance group and no build.gpus. CPU int8 is what this machine can measure; fp16 needs a GPU.

1. build    the real run_build, bigger speed budget: chosen candidate, every verdict and reason, wall time.
2. compare  fp32 and the int8 candidates from one fp32 export (the builder's own export and quantizers): size;
            p50/p99 ms and rows/s at batch 1/32/256 (ONNX Runtime CPU, 2 intra-op threads, interleaved
            round-robin by peakserve.builder.speed.measure); accuracy vs fp32 (peakserve.builder.accuracy).
3. triton   the ranker's published artifact on the real tritonserver (python backend, local_repository copy),
            config as built vs the dynamic_batching block removed; C concurrent gRPC clients sending one row per
            request, bounded by count and time; servers run A,B,A,B,...; medians reported.

Writes benchmarks/results/build.json and build.png and prints a summary table on stdout.

    .venv/bin/python benchmarks/bench_build.py [--speed-seconds 45] [--concurrency 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))  # works without the editable install too

from peakserve.builder import accuracy, export, sources, speed, candidates as cands  # noqa: E402
from peakserve.builder.environment import host_info, tool_versions  # noqa: E402
from peakserve.builder.pipeline import run_build  # noqa: E402
from peakserve.builder.progress import Progress  # noqa: E402
from peakserve.builder.runtime import CPU, run_dataset  # noqa: E402
from peakserve.loadgen import client as peakserve_client  # noqa: E402
from peakserve_harness.triton import metrics_text  # noqa: E402
from peakserve_harness.triton.install import PYTRITON_VERSION, ensure_installed  # noqa: E402
from peakserve_harness.triton.python_backend import local_repository  # noqa: E402
from peakserve_harness.triton.server import LocalTriton  # noqa: E402
from peakserve.api.validation import parse_spec  # noqa: E402

SAMPLES = {"ranker": "examples/ranker-build.yaml", "encoder": "examples/encoder.yaml"}
BATCHES = [1, 32, 256]
THREADS = 2
INT8 = ("int8Dynamic", "int8Static")
DYNAMIC_BATCHING = re.compile(r"^dynamic_batching \{[^}]*\}\n", re.MULTILINE)
RESULTS = ROOT / "benchmarks" / "results"
COLORS = {"fp32": "tab:blue", "int8Dynamic": "tab:orange", "int8Static": "tab:green"}


def log(msg: str) -> None:
    print(f"\r\033[K[bench-build] {msg}", file=sys.stderr, flush=True)


def ensure_samples() -> None:
    """`make samples` without make: train a sample whose inputs/ is missing (deterministic, < 1 min)."""
    for name in SAMPLES:
        inputs = ROOT / "model_repo" / name / "inputs"
        if not (inputs / "train_report.json").is_file():
            log(f"training the {name} sample into {inputs.relative_to(ROOT)}")
            subprocess.run([sys.executable, str(ROOT / "model_repo" / name / "train.py"), "--out", str(inputs)],
                           check=True, timeout=600)


def cpu_spec(name: str):
    """The example's spec for CPU serving: gpus 0, one KIND_CPU instance, no build GPU."""
    raw = yaml.safe_load((ROOT / SAMPLES[name]).read_text())["spec"]
    raw["serving"].update(gpus=0, instanceGroups=[{"kind": "CPU", "count": 1}])
    raw["serving"].pop("gpuProduct", None)
    raw["build"].pop("gpus", None)
    return raw, parse_spec(raw)


# ---- 1. the real build ----------------------------------------------------------------------------

def run_real_build(spec, source: Path, out: Path, budget: speed.SpeedBudget) -> dict[str, Any]:
    t0 = time.monotonic()
    result = run_build(spec, source, out, threads=THREADS, speed_budget=budget, progress=Progress())
    manifest = json.loads((out / result.artifact / "manifest.json").read_text())
    verdicts = {n: {"verdict": e.get("verdict"), "stage": e.get("stage"),
                    "reason": result.rejected.get(n, e.get("reason", result.message)),
                    "gateSpeedup": (e.get("speedFigures") or {}).get("speedup")}
                for n, e in result.details["candidates"].items()}
    return {"wall_s": round(time.monotonic() - t0, 1), "hash": result.hash, "reason": result.reason,
            "chosen": result.candidate, "message": result.message, "digest": result.digest, "candidates": verdicts,
            "budget": manifest["speed"]["budget"], "steps": manifest.get("steps", []),
            "published": str(out / result.artifact)}


# ---- 2. fp32 vs candidates ------------------------------------------------------------------------

def export_models(spec, source: Path, work: Path, progress: Progress):
    """fp32 ONNX exported with the builder's functions; the int8 candidates quantized from that one file."""
    b = spec.build
    files = sources.resolve_files(b.source, source)
    evaluation = sources.load_dataset(files.evaluation, spec.model, role="evaluation",
                                      reason="MissingEvaluationData", want_label=b.task == "ranker")
    calibration = sources.load_dataset(files.calibration, spec.model, role="calibration",
                                       reason="MissingCalibrationData")
    work.mkdir(parents=True, exist_ok=True)
    fp32, prepared = work / "fp32.onnx", work / "fp32.pre.onnx"
    with progress.step("exporting fp32 ONNX (builder's export_onnx)"):
        module = sources.load_torch_model(b.source, files)
        export.export_onnx(module, export.example_rows(evaluation.inputs), spec.model, fp32, progress)
        export.check_exported(fp32, spec.model)
    models = {"fp32": fp32}
    with progress.step("making int8 candidates (builder's quantizers)"):
        cands.prepare_for_quantization(fp32, prepared)
        if "int8Dynamic" in b.candidates:
            models["int8Dynamic"] = cands.make_int8_dynamic(prepared, work / "int8Dynamic.onnx").path
        if "int8Static" in b.candidates:
            models["int8Static"] = cands.make_int8_static(prepared, work / "int8Static.onnx",
                                                          calibration.inputs, progress).path
    return models, evaluation


def accuracy_vs_fp32(spec, models: dict[str, Path], evaluation) -> dict[str, dict]:
    names, gates = [t.name for t in spec.model.outputs], spec.build.gates
    outputs = {n: run_dataset(p, evaluation.inputs, names, [CPU], THREADS, what=n) for n, p in models.items()}
    figures = {}
    for name in models:
        if name != "fp32":
            f = accuracy.accuracy_figures(spec.build.task, outputs["fp32"], outputs[name], evaluation.labels, gates.k)
            figures[name] = {**f, "gateFailures": accuracy.accuracy_failures(spec.build.task, f, gates)}
    return figures


def compare_sample(spec, source: Path, work: Path, build: dict, seconds: float) -> dict[str, Any]:
    progress = Progress()
    models, evaluation = export_models(spec, source, work, progress)
    with progress.step(f"accuracy vs fp32 on {evaluation.rows} evaluation rows"):
        acc = accuracy_vs_fp32(spec, models, evaluation)
    budget = speed.SpeedBudget(seconds=seconds, warmup=10, min_iters=20, max_iters=5000)
    with progress.step(f"timing {', '.join(models)} round-robin, batch {BATCHES}, {seconds:g}s"):
        timing = speed.measure(models, evaluation.first, BATCHES, [CPU], threads=THREADS, budget=budget,
                               progress=progress)
    verdicts = {"fp32": "reference", **{n: c["verdict"] for n, c in build["candidates"].items()},
                build["chosen"]: "chosen"}
    out = {}
    for model, path in models.items():
        out[model] = {"verdict": verdicts[model], "bytes": path.stat().st_size, "sha256": sources.sha256_file(path),
                      "timing": {str(b): t for b, t in timing[model].items()}, "accuracy": acc.get(model),
                      "speedup_vs_fp32": {str(b): round(x, 3) for b, x in speed.speedups(timing, model).items()}}
    # Is the benchmarked file the published one? (Export and quantization are expected to be deterministic.)
    out[build["chosen"]]["same_file_as_published"] = out[build["chosen"]]["sha256"] == build["digest"]
    return {"task": spec.build.task, "evaluation_rows": evaluation.rows, "speed_budget": budget.__dict__,
            "models": out}


# ---- 3. Triton: dynamic batching vs none ----------------------------------------------------------

def triton_repositories(published: Path, work: Path, model: str) -> dict[str, Path]:
    """Two local_repository copies; 'none' has the dynamic_batching block removed, all else equal."""
    repos = {v: local_repository(published, work / f"triton-{v}") for v in ("dynamic", "none")}
    config = repos["none"] / model / "config.pbtxt"
    text, found = DYNAMIC_BATCHING.subn("", config.read_text())
    if found != 1:
        raise RuntimeError(f"expected one dynamic_batching block in {config}, found {found}")
    config.write_text(text)
    return repos


async def drive_load(url: str, model: str, rows: dict[str, np.ndarray], output: str, concurrency: int,
                     warmup_s: float, seconds: float, max_requests: int, label: str) -> dict[str, Any]:
    """`concurrency` clients on one gRPC channel, each sending single-row requests back to back."""
    client = peakserve_client.open_client("grpc", url, connections=1, timeout_s=30)
    # rows of the evaluation set, reused round-robin
    prepared = [client.prepare({name: np.ascontiguousarray(a[i:i + 1]) for name, a in rows.items()}, {})
                for i in range(256)]
    samples: list[tuple[float, float]] = []  # (start, end), perf_counter
    state = {"sent": 0, "errors": 0}
    start = time.perf_counter()
    measure_from, deadline = start + warmup_s, start + warmup_s + seconds

    async def one_client() -> None:
        while state["sent"] < max_requests and time.perf_counter() < deadline:
            inputs = prepared[state["sent"] % len(prepared)]
            state["sent"] += 1
            t0 = time.perf_counter()
            try:
                await client.infer(model, inputs, "", 30, [output])
                samples.append((t0, time.perf_counter()))
            except Exception:  # noqa: BLE001 - counted and reported; the run stays bounded
                state["errors"] += 1

    async def show() -> None:
        while True:
            live = sum(1 for s, _ in samples if s >= measure_from)
            print(f"\r\033[K    {label}: {time.perf_counter() - start:5.1f}s sent {state['sent']} "
                  f"measured {live} errors {state['errors']}", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)

    ticker = asyncio.create_task(show())
    try:
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    finally:
        ticker.cancel()
        await client.close()
        print(file=sys.stderr, flush=True)
    measured = [(s, e) for s, e in samples if s >= measure_from]
    lat = np.array([e - s for s, e in measured]) * 1000.0
    span = max(e for _, e in measured) - measure_from if measured else 0.0
    return {"requests": len(measured), "sent": state["sent"], "errors": state["errors"], "seconds": round(span, 2),
            "req_per_s": round(len(measured) / span, 1) if span else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


def triton_run(repo: Path, model: str, rows: dict, output: str, args, label: str) -> dict[str, Any]:
    with LocalTriton(repo) as server:
        ready_s = server.wait_ready(120)
        loaded = peakserve_client.model_config(server.http_url, model)
        load = asyncio.run(drive_load(server.grpc_url, model, rows, output, args.concurrency, args.triton_warmup,
                                      args.triton_seconds, args.triton_max_requests, label))
        metrics = metrics_text.parse_metrics(metrics_text.scrape_metrics(server.metrics_url))
    count = sum(metrics_text.metric_values(metrics, "nv_inference_count", model=model))
    execs = sum(metrics_text.metric_values(metrics, "nv_inference_exec_count", model=model))
    return {**load, "ready_s": round(ready_s, 1), "dynamic_batching_loaded": "dynamic_batching" in loaded,
            "mean_server_batch": round(count / execs, 2) if execs else None}


def compare_batching(published: Path, spec, source: Path, work: Path, args) -> dict[str, Any]:
    model, output = spec.model.name, spec.model.outputs[0].name
    files = sources.resolve_files(spec.build.source, source)
    rows = sources.load_dataset(files.evaluation, spec.model, role="evaluation", reason="x").inputs
    repos = triton_repositories(published, work, model)
    runs: dict[str, list] = {"dynamic": [], "none": []}
    for r in range(args.repeats):
        for variant in ("dynamic", "none"):
            label = f"triton {variant} batching, round {r + 1}/{args.repeats}"
            runs[variant].append(triton_run(repos[variant], model, rows, output, args, label))
    med = {v: {k: statistics.median(x[k] for x in rs) for k in ("req_per_s", "p50_ms", "p99_ms")}
           for v, rs in runs.items()}
    pairs = [round(a["req_per_s"] / b["req_per_s"], 2) for a, b in zip(runs["dynamic"], runs["none"])]
    return {"model": model, "concurrency": args.concurrency, "warmup_s": args.triton_warmup,
            "seconds": args.triton_seconds, "max_requests": args.triton_max_requests, "order": "A,B,A,B...",
            "config_dynamic_batching": DYNAMIC_BATCHING.search((repos["dynamic"] / model / "config.pbtxt")
                                                               .read_text()).group(0).strip(),
            "server_intra_op_threads": 1, "runs": runs, "median": med, "pair_ratios": pairs,
            "throughput_ratio": round(med["dynamic"]["req_per_s"] / med["none"]["req_per_s"], 2)}


# ---- output ---------------------------------------------------------------------------------------

def plot_throughput(ax, sample: str, models: dict) -> None:
    for name, m in models.items():
        ax.plot(BATCHES, [m["timing"][str(b)]["rowsPerS"] for b in BATCHES], marker="o", color=COLORS[name],
                linestyle="-" if name == "fp32" else "--", label=f"{name} ({m['verdict']})")
    ax.set(xscale="log", yscale="log", xlabel="batch size (rows)", ylabel="rows/s (batch / p50 latency)",
           title=f"{sample}: ONNX Runtime CPU, {THREADS} threads, round-robin")
    ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def plot_sizes(ax, samples: dict) -> None:
    bars = [(f"{s}\n{n}", m["bytes"] / 1e6, COLORS[n])
            for s, d in samples.items() for n, m in d["compare"]["models"].items()]
    ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    for i, (_, mb, _) in enumerate(bars):
        ax.text(i, mb, f"{mb:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="model.onnx size (MB)", title="Model file size")


def plot_triton(ax, tri: dict, served: str) -> None:
    for i, (variant, runs) in enumerate(tri["runs"].items()):
        med = tri["median"][variant]
        ax.bar(i, med["req_per_s"], color=["tab:purple", "tab:grey"][i], alpha=0.8)
        ax.scatter([i] * len(runs), [r["req_per_s"] for r in runs], color="black", zorder=3, s=12)
        ax.text(i, med["req_per_s"] * 0.5, f"p50 {med['p50_ms']:.1f} ms\np99 {med['p99_ms']:.1f} ms",
                ha="center", fontsize=9, color="white")
    ax.set_xticks([0, 1], ["dynamic batching\n(config as built)", "no dynamic_batching"])
    ax.set(ylabel="requests/s (bar: median; dots: each run)",
           title=f"Triton, {tri['model']} ({served}), {tri['concurrency']} clients, 1 row/request: "
                 f"{tri['throughput_ratio']:.2f}x")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, (sample, data) in zip(axes[0], results["samples"].items()):
        plot_throughput(ax, sample, data["compare"]["models"])
    plot_sizes(axes[1][0], results["samples"])
    if results.get("triton"):
        plot_triton(axes[1][1], results["triton"], results["samples"]["ranker"]["build"]["chosen"])
    fig.suptitle(f"peakserve model builds, CPU only ({results['host']['cpu']['cores']} cores, no GPU), "
                 f"{results['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(results: dict[str, Any]) -> str:
    """Plain text: per sample, one row per model (size, p50/p99 ms and rows/s with x fp32, accuracy), verdicts."""
    lines = []
    for sample, data in results["samples"].items():
        b, task = data["build"], data["compare"]["task"]
        keys = ("aucDelta", "loglossDelta", "topKAgreement") if task == "ranker" else ("minCosine", "recallAtK")
        lines += [f"{sample}: run_build {b['wall_s']}s, chose {b['chosen']} ({b['reason']})",
                  f"  {'model':<12} {'verdict':<9} {'MB':>5} " + " ".join(
                      f"{f'b{x} p50/p99 ms':>15} {'rows/s':>13}" for x in BATCHES) + "  accuracy vs fp32"]
        for name, m in data["compare"]["models"].items():
            t, acc, up = m["timing"], m["accuracy"] or {}, m["speedup_vs_fp32"]
            cells = [f"{t[str(x)]['p50Ms']:>7.3f}/{t[str(x)]['p99Ms']:<7.3f} {t[str(x)]['rowsPerS']:>7.0f} "
                     f"({up[str(x)]:.2f}x)" for x in BATCHES]
            lines.append(f"  {name:<12} {m['verdict']:<9} {m['bytes'] / 1e6:5.2f} " + " ".join(cells) + "  "
                         + ", ".join(f"{k} {acc[k]:.4g}" for k in (*keys, "maxAbsDiff", "p99AbsDiff") if k in acc))
        lines += [f"  {name}: {c['verdict']}: {c['reason'] or '-'}" for name, c in b["candidates"].items()]
    tri = results.get("triton")
    if tri:
        lines.append(f"triton {tri['model']}, {tri['concurrency']} clients, medians of {len(tri['pair_ratios'])}: "
                     + "; ".join(f"{v} {m['req_per_s']:.0f} req/s p50 {m['p50_ms']:.1f} ms p99 {m['p99_ms']:.1f} ms"
                                 for v, m in tri["median"].items()) + f"; ratio {tri['throughput_ratio']}x")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    extra = {d: metadata.version(d) for d in ("tritonclient", "matplotlib")}
    return {**tool_versions(), **extra, "nvidia-pytriton (tritonserver)": PYTRITON_VERSION}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", nargs="+", choices=list(SAMPLES), default=list(SAMPLES))
    p.add_argument("--build-speed-seconds", type=float, default=9.0, help="run_build speed budget (default 3)")
    p.add_argument("--speed-seconds", type=float, default=45.0, help="per sample, all batch sizes together")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="A,B pairs of Triton servers")
    p.add_argument("--triton-warmup", type=float, default=2.0)
    p.add_argument("--triton-seconds", type=float, default=10.0)
    p.add_argument("--triton-max-requests", type=int, default=80000, help="a safety bound; time ends a run")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the work dir (models, Triton logs)")
    args = p.parse_args(argv)
    t_start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peakserve-bench-build-"))
    results: dict[str, Any] = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "CPU only: int8 candidates on ONNX Runtime CPU; fp16 needs a GPU (none here) and is rejected "
                "for CPU serving. Triton runs the python backend locally (onnxruntime inside the stub).",
        "host": host_info(), "versions": versions(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "batch_sizes": BATCHES, "threads": THREADS, "samples": {},
    }
    log(f"work dir {work}; CPU only ({results['host']['cpu']['model']}, ISA {results['host']['cpu']['isa']})")
    rc = 1
    try:
        ensure_samples()
        for name in args.samples:
            raw, spec = cpu_spec(name)
            source = ROOT / "model_repo" / name / "inputs"
            log(f"{name}: run_build (CPU serving, speed budget {args.build_speed_seconds:g}s)")
            build = run_real_build(spec, source, work / "artifacts",
                                   speed.SpeedBudget(seconds=args.build_speed_seconds, warmup=5, min_iters=10,
                                                     max_iters=2000))
            log(f"{name}: chose {build['chosen']} in {build['wall_s']}s; now fp32 vs candidates")
            compare = compare_sample(spec, source, work / f"compare-{name}", build, args.speed_seconds)
            results["samples"][name] = {"spec": raw, "build": build, "compare": compare}
        if "ranker" in results["samples"]:
            ensure_installed(log)
            _, spec = cpu_spec("ranker")
            log("ranker on tritonserver: dynamic batching vs none")
            results["triton"] = compare_batching(Path(results["samples"]["ranker"]["build"]["published"]), spec,
                                                 ROOT / "model_repo" / "ranker" / "inputs", work, args)
        rc = 0
    except BaseException as err:
        results["error"] = f"{type(err).__name__}: {err}"
        log(f"FAILED: {results['error']}")
        rc = 130 if isinstance(err, KeyboardInterrupt) else 1
    finally:
        results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["total_s"] = round(time.monotonic() - t_start, 1)
        (args.out / "build.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.out / 'build.json'} ({results['total_s']}s in all)")
        if rc == 0:
            plot(results, args.out / "build.png")
            log(f"wrote {args.out / 'build.png'}")
        if args.keep or rc != 0:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if rc == 0:
        print(summary(results))
    return rc


if __name__ == "__main__":
    sys.exit(main())
