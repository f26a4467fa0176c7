"""`peakserve analyze`: canary against stable at the end of a canary step; one JSON verdict.

    peakserve analyze --model ranker --version 1 \\
        --stable 10.0.0.5:8000 --stable 10.0.0.6:8000 --canary 10.0.0.7:8000 \\
        --probe /models/ranker/1/probe.npz --prometheus http://prometheus-operated.monitoring.svc:9090 \\
        --namespace shop --stable-pods 'ranker-[a-z0-9]+-[a-z0-9]+' --canary-pods 'ranker-canary-.*' \\
        --thresholds '{"windowSeconds": 120, "probe": {"maxPsi": 0.1}}' --result-file /dev/termination-log

The operator runs it in a Job (the model-builder image). First Triton's metrics of each side over
the window (Prometheus; skipped without --prometheus or with too little canary traffic), then the
probe comparison (the same probe rows through one stable and one canary endpoint; skipped without
--probe or with probe.enabled false). The result JSON goes to --result-file and stdout.

Exit codes: 0 the analysis ran (passed or not: see "passed"), 3 it could not run (a side
unreachable, the probe missing or not fitting the model: reason AnalysisError), 2 bad arguments,
1 a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_ANALYSIS_ERROR = 0, 1, 2, 3


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `analyze` on an argparse subparsers object; the command runs main(args)."""
    p = sub.add_parser("analyze", help="compare a canary with stable (Triton metrics, probe outputs) and "
                                       "write a JSON verdict",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--version", required=True, type=int, metavar="N", help="model version the canary serves")
    p.add_argument("--stable", action="append", required=True, metavar="HOST:PORT",
                   help="Triton HTTP endpoint of a Ready stable pod (repeatable; the first that answers is used)")
    p.add_argument("--canary", action="append", required=True, metavar="HOST:PORT",
                   help="Triton HTTP endpoint of a Ready canary pod (repeatable)")
    p.add_argument("--probe", metavar="PATH", help=".npz probe: one array per input tensor, optional `labels`")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus base URL; without it the metric checks "
                                                       "are skipped")
    p.add_argument("--namespace", metavar="NS", help="the pods' namespace (Prometheus `namespace` label)")
    p.add_argument("--stable-pods", metavar="REGEX", help="Prometheus `pod` label regex of the stable pods")
    p.add_argument("--canary-pods", metavar="REGEX", help="Prometheus `pod` label regex of the canary pods")
    p.add_argument("--thresholds", metavar="JSON", default="{}",
                   help="spec.rollout.analysis as JSON (camelCase); default: its defaults")
    p.add_argument("--result-file", metavar="PATH", help="write the JSON result here (the Job passes "
                                                         "/dev/termination-log)")
    p.set_defaults(func=main)
    return p


class _Usage(Exception):
    pass


def _thresholds(text: str):
    from pydantic import ValidationError

    from ..api.spec import RolloutAnalysis

    try:
        return RolloutAnalysis.model_validate(json.loads(text))
    except (ValueError, ValidationError) as err:
        first = str(err).strip().splitlines()
        raise _Usage(f"--thresholds is not a valid rollout analysis: {' '.join(first[:3])}") from None


def analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Run the checks; the result dict. Raises AnalysisError when the analysis cannot run."""
    from . import verdict

    t = _thresholds(args.thresholds)
    if args.prometheus and not (args.namespace and args.stable_pods and args.canary_pods):
        raise _Usage("--prometheus needs --namespace, --stable-pods and --canary-pods")
    figures: dict[str, float] = {}
    failures: list[verdict.Failure] = []
    skipped: list[str] = []

    if not args.prometheus:
        skipped.append("metrics: no Prometheus address (--prometheus)")
    else:
        from .prometheus import side_metrics

        canary = side_metrics(args.prometheus, args.namespace, args.canary_pods, args.model, t.window_seconds)
        stable = side_metrics(args.prometheus, args.namespace, args.stable_pods, args.model, t.window_seconds)
        figures.update(verdict.metric_figures(canary, stable))
        found, skips = verdict.metric_checks(canary, stable, t)
        failures += found
        skipped += skips

    if not t.probe.enabled:
        skipped.append("probe: disabled (probe.enabled false)")
    elif not args.probe:
        skipped.append("probe: no probe data (--probe)")
    else:
        from .probe import run_probe

        probe_figures, kind, labelled = run_probe(args.model, str(args.version), args.stable, args.canary, args.probe,
                                        t.probe.kind, t.probe.rows, t.probe.top_k)
        figures.update(probe_figures)
        failures += verdict.probe_checks(probe_figures, t.probe)
        skipped += verdict.probe_skips(probe_figures, kind, labelled)
    return verdict.result(figures, sorted(failures, key=lambda f: verdict.REASONS.index(f.reason)), skipped)


def _write(path: str | None, text: str) -> None:
    if not path:
        return
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        print(f"warning: cannot write the result to {path}: {err}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from . import verdict
    from .errors import AnalysisError

    try:
        out, code = analyze(args), EXIT_OK
    except _Usage as err:
        print(f"peakserve analyze: {err}", file=sys.stderr)
        out, code = verdict.analysis_error(str(err)), EXIT_USAGE
    except AnalysisError as err:
        out, code = verdict.analysis_error(str(err)), EXIT_ANALYSIS_ERROR
    except Exception as err:  # a crash: report it, and let the Job's retry policy decide
        traceback.print_exc(file=sys.stderr)
        out, code = verdict.analysis_error(f"crashed: {type(err).__name__}: {err}"), EXIT_CRASH
    text = verdict.dumps(out)
    _write(args.result_file, text)
    print(text)
    return code
