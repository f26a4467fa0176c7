"""`peakserve bench`: load a deployed model with bounded traffic; report throughput and latency.

    peakserve bench --url 127.0.0.1:8001 --model ranker --concurrency 8 --duration 10
    peakserve bench --url http://10.0.0.5:8000 --url http://10.0.0.6:8000 --model ranker \\
        --mode rate --rate 500 --duration 30 --max-requests 20000 --json out.json
    peakserve bench --url 127.0.0.1:8001 --model ranker --capacity --slo-ms 50

Fixed concurrency (closed loop, the default) keeps N requests outstanding; fixed rate (open loop)
starts requests on a schedule whatever the server does, and measures latency from each request's
intended start (no coordinated omission), dropping and counting requests beyond --max-inflight.
Runs stop after --warmup + --duration seconds or --max-requests measured requests, whichever comes
first. Requests are spread round-robin over the --url endpoints; an endpoint that keeps failing is
skipped for a while. --capacity steps the load up until p99 exceeds --slo-ms or throughput stops
rising, and reports the highest throughput within the SLO.

Exit codes: 0 the run completed with no errors or drops (--capacity: a capacity was found),
1 errors, drops or nothing completed (the results are still printed and written), 2 bad arguments
or the model's config could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `bench` on an argparse subparsers object; the command runs main(args)."""
    p = sub.add_parser("bench", help="load a deployed model with bounded traffic and report "
                                     "throughput and latency",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", action="append", required=True, metavar="URL",
                   help="Triton endpoint: host:port (gRPC unless --protocol http), grpc://host:port "
                        "or http://host:port; repeat for several (round-robin)")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--model-version", default="", metavar="V", help="default: the server's choice")
    p.add_argument("--mode", choices=["concurrency", "rate"], default=None,
                   help="closed loop (default; or rate when only --rate is given) or open loop")
    p.add_argument("--rate", type=float, default=None, metavar="R",
                   help="fixed-rate mode: requests per second (--capacity: the first step)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="fixed-concurrency mode: requests in flight (default 1; --capacity: the "
                        "first step)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="measured seconds (default 10; --capacity: per step, default 5)")
    p.add_argument("--max-requests", type=int, default=None, metavar="N",
                   help="stop after N measured requests (default: no count limit)")
    p.add_argument("--warmup", type=float, default=1.0, metavar="S",
                   help="seconds of load before measuring, not counted (default 1)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="rows per request (default 1)")
    p.add_argument("--data", type=Path, default=None, metavar="FILE.npz",
                   help="real inputs: one array per model input with a leading row axis "
                        "(default: random inputs of the model's signature)")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc",
                   help="protocol of URLs without a scheme (default grpc)")
    p.add_argument("--arrival", choices=["constant", "poisson"], default="constant",
                   help="fixed-rate schedule: evenly spaced (default) or Poisson arrivals")
    p.add_argument("--max-inflight", type=int, default=None, metavar="N",
                   help="fixed rate: requests outstanding before new ones are dropped "
                        "(default: rate x 1 s, within 16..4096)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="per-request timeout (default 10)")
    p.add_argument("--skip-after", type=int, default=3, metavar="N",
                   help="skip an endpoint for 2 s after N consecutive failures (0: never)")
    p.add_argument("--seed", type=int, default=0, help="random inputs' seed")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    cap = p.add_argument_group("capacity search (--capacity)")
    cap.add_argument("--capacity", action="store_true",
                     help="step the load up and report the highest throughput within --slo-ms")
    cap.add_argument("--slo-ms", type=float, default=None, metavar="MS",
                     help="p99 latency objective (required with --capacity)")
    cap.add_argument("--max-steps", type=int, default=6, metavar="N",
                     help="at most N steps (default 6, at most 12)")
    cap.add_argument("--step-factor", type=float, default=2.0, metavar="F",
                     help="each step's load = the previous x F (default 2)")
    p.set_defaults(func=main)
    return p


class _Usage(ValueError):
    pass


def _mode(args: argparse.Namespace) -> str:
    if args.mode:
        return args.mode
    return "rate" if args.rate is not None and args.concurrency is None else "concurrency"


def _check(args: argparse.Namespace, mode: str) -> None:
    if mode == "rate" and (args.rate is None or args.rate <= 0):
        raise _Usage("--mode rate needs --rate > 0")
    if mode == "concurrency" and args.concurrency is not None and args.concurrency < 1:
        raise _Usage("--concurrency must be >= 1")
    if not 0 < args.duration <= 24 * 3600:
        raise _Usage("--duration must be within (0, 86400] seconds")
    if args.warmup < 0:
        raise _Usage("--warmup must be >= 0")
    if args.max_requests is not None and args.max_requests < 1:
        raise _Usage("--max-requests must be >= 1")
    if args.batch < 1:
        raise _Usage("--batch must be >= 1")
    if not args.timeout > 0:
        raise _Usage("--timeout must be > 0")
    if args.max_inflight is not None and args.max_inflight < 1:
        raise _Usage("--max-inflight must be >= 1")
    if args.skip_after < 0:
        raise _Usage("--skip-after must be >= 0")
    if args.capacity:
        from .capacity import MAX_STEPS

        if args.slo_ms is None or args.slo_ms <= 0:
            raise _Usage("--capacity needs --slo-ms > 0")
        if not 1 <= args.max_steps <= MAX_STEPS:
            raise _Usage(f"--max-steps must be within 1..{MAX_STEPS}")
        if not args.step_factor > 1:
            raise _Usage("--step-factor must be > 1")


class ProgressPrinter:
    """One line per report on stderr; redrawn in place on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, label: str = "bench"):
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.dirty = False

    def __call__(self, p) -> None:
        p99 = "-" if p.p99_ms is None else f"{p.p99_ms:.1f}"
        line = (f"[{self.label}] {p.elapsed_s:6.1f}s {p.phase:<7} {p.rps:8.1f} req/s  p99 {p99:>7} ms"
                f"  ok {p.completed}  errors {p.errors}  dropped {p.dropped}  inflight {p.inflight}"
                f"  endpoints {p.endpoints_live}/{p.endpoints_present}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.stream.flush()
            self.dirty = False


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_result(r) -> str:
    """The human summary of a LoadResult."""
    how = (f"rate {r.rate:g} req/s ({r.arrival})" if r.mode == "rate"
           else f"concurrency {r.concurrency}")
    lines = [f"model {r.model}: {how}, batch {r.batch_rows}, {r.elapsed_s:.1f}s measured after "
             f"{r.warmup_s:g}s warmup, stopped by {r.stop_reason}"]
    offered = f" (offered {r.offered_rps:.1f} req/s)" if r.offered_rps is not None else ""
    lines.append(f"  throughput  {r.throughput_rps:.1f} req/s, {r.rows_per_s:.1f} rows/s{offered}")
    lines.append(f"  requests    {r.sent} sent, {r.completed} ok, {r.errors} errors, "
                 f"{r.dropped} dropped")
    for title, lat in (("latency ms", r.latency_ms), ("service ms", r.service_ms)):
        if r.mode != "rate" and title == "service ms":
            continue  # closed loop: the same figures
        lines.append(f"  {title:<11} p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  "
                     f"p99 {_ms(lat['p99'])}  max {_ms(lat['max'])}"
                     + ("  (from intended start)" if r.mode == "rate" and title == "latency ms"
                        else ""))
    if r.mode == "rate":
        lag = r.send_lag_ms
        lines.append(f"  send lag ms p50 {_ms(lag['p50'])}  p99 {_ms(lag['p99'])}  max {_ms(lag['max'])}"
                     "  (how late this client sent; large = the client is the bottleneck)")
    if r.errors_by_kind or r.dropped_by_kind:
        kinds = {**r.errors_by_kind, **{f"dropped:{k}": v for k, v in r.dropped_by_kind.items()}}
        lines.append("  errors      " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines += [f"  warning     {w}" for w in r.warnings]
    width = max((len(u) for u in r.endpoints), default=8)
    for url, e in r.endpoints.items():
        errs = "".join(f" ({', '.join(f'{k} {v}' for k, v in e.errors_by_kind.items())})"
                       if e.errors_by_kind else "")
        skips = f", skipped {e.skips}x" if e.skips else ""
        lines.append(f"  {url:<{width}}  {e.sent:>7} sent {e.completed:>7} ok {e.errors:>5} errors"
                     f"{errs}  p99 {_ms(e.p99_ms)} ms{skips}")
    return "\n".join(lines)


def format_capacity(c) -> str:
    unit = "concurrency" if c.mode == "concurrency" else "rate"
    lines = [f"model {c.model}: capacity search by {unit}, p99 SLO {c.slo_ms:g} ms, "
             f"batch {c.batch_rows}"]
    for s in c.steps:
        lines.append(f"  {unit} {s.level:>8g}  {s.throughput_rps:9.1f} req/s  "
                     f"p99 {_ms(s.p99_ms):>8} ms  errors {s.errors}  dropped {s.dropped}  "
                     f"{s.verdict}")
    if c.capacity_rps > 0:
        lines.append(f"  capacity {c.capacity_rps:.1f} req/s ({c.capacity_rows_per_s:.1f} rows/s) at "
                     f"{unit} {c.best_level:g}, p99 {_ms(c.best_p99_ms)} ms; per replica "
                     f"{c.per_replica_rps:.1f} req/s over {c.replicas} endpoint(s)")
    else:
        lines.append("  no step was within the SLO")
    lines.append(f"  stopped: {c.stop_reason}")
    if c.lower_bound:
        lines.append("  (a lower bound: the search stopped before the servers did)")
    return "\n".join(lines)


async def _signature_and_data(args, protocol: str):
    from .data import RequestData, load_npz
    from .endpoints import EndpointPool
    from .runner import resolve_signature

    pool = EndpointPool(args.url, default_protocol=protocol)
    try:
        await pool.refresh()
        signature = await resolve_signature(pool, args.model, args.model_version, args.timeout)
    finally:
        await pool.close()
    source = load_npz(args.data, signature) if args.data else None
    return signature, RequestData(signature, args.batch, source, seed=args.seed)


async def _bench(args, mode: str, printer: ProgressPrinter | None):
    from .capacity import find_capacity
    from .runner import run_load

    signature, data = await _signature_and_data(args, args.protocol)
    common = dict(batch_rows=args.batch, inputs_factory=data, signature=signature,
                  protocol=args.protocol, model_version=args.model_version,
                  timeout_s=args.timeout, max_inflight=args.max_inflight, arrival=args.arrival,
                  seed=args.seed, skip_after=args.skip_after, on_progress=printer)
    if args.capacity:
        start = (args.concurrency or 1) if mode == "concurrency" else args.rate

        def on_step(step):
            if printer is not None:
                printer.end()
                print(f"[bench] step {mode} {step.level:g}: {step.throughput_rps:.1f} req/s, "
                      f"p99 {_ms(step.p99_ms)} ms: {step.verdict}", file=sys.stderr, flush=True)

        return await find_capacity(args.url, args.model, slo_ms=args.slo_ms, mode=mode,
                                   start=start, factor=args.step_factor, max_steps=args.max_steps,
                                   step_seconds=args.duration, step_warmup=args.warmup,
                                   step_max_requests=args.max_requests, on_step=on_step, **common)
    return await run_load(args.url, args.model, mode=mode, rate=args.rate,
                          concurrency=args.concurrency or 1, duration=args.duration,
                          max_requests=args.max_requests, warmup=args.warmup, **common)


def main(args: argparse.Namespace) -> int:
    from .data import DataError
    from .client import parse_endpoint
    from .runner import LoadError

    mode = _mode(args)
    if args.duration is None:
        args.duration = 5.0 if args.capacity else 10.0
    try:
        _check(args, mode)
        for url in args.url:
            parse_endpoint(url, args.protocol)
    except (_Usage, ValueError) as err:
        print(f"peakserve bench: {err}", file=sys.stderr)
        return EXIT_USAGE
    printer = None if args.quiet else ProgressPrinter()
    try:
        result = asyncio.run(_bench(args, mode, printer))
    except (LoadError, DataError) as err:
        if printer:
            printer.end()
        print(f"peakserve bench: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if printer:
            printer.end()
        print("peakserve bench: interrupted", file=sys.stderr)
        return 130
    if printer:
        printer.end()
    if args.capacity:
        print(format_capacity(result))
        document = {"kind": "capacity", **result.to_dict()}
        rc = EXIT_OK if result.capacity_rps > 0 else EXIT_FAILED
    else:
        print(format_result(result))
        document = {"kind": "bench", **result.to_dict()}
        rc = EXIT_OK if result.ok() else EXIT_FAILED
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        if not args.quiet:
            print(f"[bench] wrote {args.json}", file=sys.stderr)
    return rc
