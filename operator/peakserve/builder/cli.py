"""`peakserve build`: build, gate and publish a model from a ModelDeployment spec.

Runs on a laptop (-f md.yaml --source DIR --out DIR) and as the in-cluster build Job
(--spec-json ... --result-file /dev/termination-log). Exit codes: 0 built (or cached),
3 a deterministic failure (BuildError: retrying cannot help), 2 bad arguments, 1 a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from .errors import BuildError
from ..redact import redact_text, redact_uri

EXIT_OK, EXIT_CRASH, EXIT_USAGE = 0, 1, 2


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `build` on an argparse subparsers object; the command runs main(args)."""
    p = sub.add_parser("build", help="build a model: torch -> ONNX -> int8/fp16 candidates, gated on "
                                     "accuracy and speed, published as a Triton model repository",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = p.add_mutually_exclusive_group(required=True)
    spec.add_argument("-f", "--file", metavar="MD.yaml", help="a ModelDeployment YAML (its spec is built)")
    spec.add_argument("--spec-json", metavar="JSON", help="the spec as JSON (what the build Job passes)")
    p.add_argument("--source", metavar="DIR", help="directory of build.source (default: build.source.uri "
                                                   "when it is an absolute path)")
    p.add_argument("--out", metavar="DIR", help="artifact directory (default: build.artifacts.uri when it is "
                                                "an absolute path); the build goes to DIR/<hash>")
    p.add_argument("--result-file", metavar="PATH", help="write the JSON result summary here "
                                                         "(the Job passes /dev/termination-log)")
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime intra-op threads for the gates (default 2)")
    p.set_defaults(func=main)
    return p


def _load_spec(args: argparse.Namespace):
    import yaml

    from ..api.validation import InvalidSpec, parse_spec

    try:
        if args.file:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            documents = [d for d in yaml.safe_load_all(text) if d]
            bodies = [d for d in documents if isinstance(d, dict) and d.get("kind") == "ModelDeployment"]
            raw = (bodies or documents or [None])[0]
            raw = raw.get("spec") if isinstance(raw, dict) else None
        else:
            raw = json.loads(args.spec_json)
            if isinstance(raw, dict) and "spec" in raw and "model" not in raw:
                raw = raw["spec"]  # a whole object was passed
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise BuildError("InvalidSpec", f"cannot read the spec: {err}") from None
    try:
        spec = parse_spec(raw)
    except InvalidSpec as err:
        raise BuildError("InvalidSpec", str(err)) from None
    if spec.build is None:
        raise BuildError("InvalidSpec", "spec.build is not set: there is nothing to build")
    return spec


def _local_dir(given: str | None, uri: str, what: str, flag: str) -> Path:
    if given:
        return Path(given)
    if uri.startswith("/"):
        return Path(uri)
    raise _Usage(f"{what} is {redact_uri(uri)}, not a local path: pass {flag} DIR "
                 "(the build Job mounts it and passes the mount point)")


class _Usage(Exception):
    pass


def _write_result(path: str | None, summary: dict[str, Any]) -> None:
    if not path:
        return
    try:
        with open(path, "w") as f:
            f.write(json.dumps(summary))
    except OSError as err:
        print(f"warning: cannot write the result to {path}: {err}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from ..api.identity import build_hash
    from .pipeline import BuildResult

    build_id = "unknown"
    try:
        spec = _load_spec(args)
        build_id = build_hash(spec)
        source = _local_dir(args.source, spec.build.source.uri, "build.source.uri", "--source")
        out = _local_dir(args.out, spec.build.artifacts.uri, "build.artifacts.uri", "--out")
        if args.threads is not None and args.threads < 1:
            raise _Usage("--threads must be >= 1")
        from .pipeline import run_build
        from .runtime import DEFAULT_THREADS

        result = run_build(spec, source, out, quiet=args.quiet, threads=args.threads or DEFAULT_THREADS)
    except _Usage as err:
        print(f"peakserve build: {err}", file=sys.stderr)
        _write_result(args.result_file, BuildResult.failed(build_id, "InvalidArguments", str(err)).summary())
        return EXIT_USAGE
    except BuildError as err:
        result = BuildResult.failed(build_id, err.reason, err.message)
        if err.details:
            result.details = err.details
            print(format_table(result))
        print(f"build {build_id} failed: {err.reason}: {redact_text(err.message)}", file=sys.stderr)
        _write_result(args.result_file, result.summary())
        return BuildError.exit_code
    except Exception as err:  # a crash: report it, and let the Job's retry policy decide
        traceback.print_exc(file=sys.stderr)
        message = f"{type(err).__name__}: {err}"
        _write_result(args.result_file, BuildResult.failed(build_id, "BuildCrashed", message).summary())
        return EXIT_CRASH
    print(format_table(result))
    _write_result(args.result_file, result.summary())
    return EXIT_OK


def format_table(result) -> str:
    """The human summary: one row per candidate with its figures, speedups and verdict, then the choice."""
    details = result.details or {}
    batches = details.get("batchSizes", [])
    rows = [["candidate", "maxAbsDiff", "p99AbsDiff", "task figures", *[f"b{b}" for b in batches], "verdict"]]
    export = details.get("export", {})
    fp32_note = (f"export |torch-onnx| {export['maxAbsDiff']:.2g}" if isinstance(export.get("maxAbsDiff"), float)
                 else "reference")
    rows.append(["fp32", "-", "-", fp32_note, *["1.00x" for _ in batches],
                 "chosen" if result.candidate == "fp32" else "reference"])
    for name, entry in details.get("candidates", {}).items():
        acc = entry.get("accuracy", {})
        task = [f"{k} {_num(acc[k])}" for k in ("minCosine", "recallAtK", "aucDelta", "loglossDelta", "topKAgreement")
                if k in acc]
        speeds = entry.get("speedFigures", {})
        rows.append([name, _num(acc.get("maxAbsDiff")), _num(acc.get("p99AbsDiff")), ", ".join(task) or "-",
                     *[f"{speeds[f'speedupB{b}']:.2f}x" if f"speedupB{b}" in speeds else "-" for b in batches],
                     entry.get("verdict", "?")])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    outcome = (f"{result.candidate} [{result.precision}] {result.digest}" if result.candidate
               else "nothing published")
    head = f"build {result.hash}: {result.phase} ({result.reason}{', cached' if result.cached else ''}) -> {outcome}"
    tail = [f"  {n}: {r}" for n, r in result.rejected.items()]
    footer = (["not chosen:", *tail] if tail else []) + [f"message: {redact_text(result.message)}"]
    return "\n".join([head, *lines, *footer])


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}"
