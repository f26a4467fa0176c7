"""The asyncio load runner: fixed rate (open loop) or fixed concurrency (closed loop), bounded.

``await run_load(endpoints, model, mode=..., duration=..., max_requests=...)`` sends inference
requests to one or more Triton endpoints for ``warmup + duration`` seconds at most (and at most
``max_requests`` measured requests), then waits for the requests in flight (at most
``timeout_s``) and returns a :class:`~peakserve.loadgen.stats.LoadResult`.

* fixed rate: request k is due at ``start + k / rate`` (or after exponential gaps with
  ``arrival="poisson"``) whether or not earlier ones have completed; its latency is measured from
  that intended start, so a server that falls behind shows it (no coordinated omission). When
  ``max_inflight`` requests are outstanding, a due request is dropped and counted, not delayed.
* fixed concurrency: ``concurrency`` workers each send their next request when the last one
  completes.

Requests go round-robin to the live endpoints (:class:`~peakserve.loadgen.endpoints.EndpointPool`);
``endpoints`` may be a callable (sync or async) re-read every ``refresh_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .data import RequestData, Signature, fetch_signature
from .client import error_kind
from .endpoints import Endpoint, EndpointPool, EndpointSource
from .stats import Drop, LoadResult, Sample, percentile, summarize

MODES = ("rate", "concurrency")
DEFAULT_POOL, MAX_POOL = 64, 1024  # distinct requests made up front
ARRIVALS = ("constant", "poisson")
clock = time.perf_counter

InputsFactory = Callable[[int], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Progress:
    """A progress report, about once a second. Counts include warmup; ``rps`` and ``p99_ms`` are
    over the last interval (successes per second, latency from the intended start)."""

    elapsed_s: float
    phase: str            # "warmup" | "measure" | "drain"
    sent: int
    completed: int
    errors: int
    dropped: int
    inflight: int
    rps: float
    p99_ms: float | None
    endpoints_live: int
    endpoints_present: int


class LoadError(RuntimeError):
    """The run could not start (no endpoint answered the model's config, bad data)."""


def _check_params(mode, rate, concurrency, duration, max_requests, warmup, batch_rows, arrival,
                  timeout_s) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "rate" and not (rate and rate > 0 and math.isfinite(rate)):
        raise ValueError("fixed-rate mode needs rate > 0 (requests per second)")
    if mode == "concurrency" and not (concurrency and concurrency >= 1):
        raise ValueError("fixed-concurrency mode needs concurrency >= 1")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError("duration must be a finite number of seconds > 0")
    if max_requests is not None and max_requests < 1:
        raise ValueError("max_requests must be >= 1 (or None)")
    if not (warmup >= 0 and math.isfinite(warmup)):
        raise ValueError("warmup must be a finite number of seconds >= 0")
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}, got {arrival!r}")
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError("timeout_s must be > 0")


async def resolve_signature(pool: EndpointPool, model: str, version: str,
                            timeout_s: float) -> Signature:
    """The model's signature from the first present endpoint that answers."""
    problems = []
    for e in pool.present:
        try:
            return await fetch_signature(e.target.address, e.target.protocol, model,
                                         version=version, timeout_s=timeout_s)
        except Exception as err:  # noqa: BLE001 - try the next endpoint, report them all
            problems.append(f"{e.url}: {error_kind(err)}: {err}")
    raise LoadError(f"cannot read the config of model {model!r} from any endpoint: "
                    + ("; ".join(problems) or "no endpoints"))


class _Run:
    def __init__(self, pool: EndpointPool, model: str, version: str, payloads: list,
                 datatypes: Mapping[str, str], *, mode: str, rate: float | None,
                 concurrency: int | None, duration: float, max_requests: int | None,
                 warmup: float, max_inflight: int, arrival: str, timeout_s: float, seed: int):
        self.pool, self.model, self.version = pool, model, version
        self.arrays = payloads
        self.datatypes = datatypes
        self.prepared: dict[str, list] = {}
        self.mode, self.rate, self.concurrency = mode, rate, concurrency
        self.duration, self.max_requests, self.warmup = duration, max_requests, warmup
        self.max_inflight, self.arrival, self.timeout_s = max_inflight, arrival, timeout_s
        self.rng = np.random.default_rng(seed)
        self.samples: list[Sample] = []
        self.drops: list[Drop] = []
        self.inflight = 0
        self.n_ok = self.n_errors = 0
        self.tasks: set[asyncio.Task] = set()
        self.claimed = 0          # measured requests started (rate mode: scheduled, incl. drops)
        self.next_payload = 0
        self.stop_reason = "duration"
        self.draining = False
        self.t0 = self.measure_from = self.deadline = self.stop_at = 0.0

    # -------------------------------------------------------------------------- one request
    def _payload(self, protocol: str, client) -> Any:
        prepared = self.prepared.get(protocol)
        if prepared is None:
            prepared = self.prepared[protocol] = [client.prepare(a, self.datatypes)
                                                  for a in self.arrays]
        p = prepared[self.next_payload % len(prepared)]
        self.next_payload += 1
        return p

    async def _send(self, e: Endpoint, intended: float, closed_loop: bool = False) -> None:
        """Send one request due at ``intended``; in closed loop it is sent then, by definition."""
        payload = self._payload(e.target.protocol, e.client)
        self.inflight += 1
        e.inflight += 1
        sent = intended if closed_loop else clock()
        kind: str | None = None
        try:
            # the clients enforce timeout_s (gRPC deadline, aiohttp total timeout); the run's
            # drain cancels whatever is left after that, so no extra wait_for task per request
            await e.client.infer(self.model, payload, self.version, self.timeout_s)
        except asyncio.CancelledError:
            kind = "cancelled"
            raise
        except Exception as err:  # noqa: BLE001 - every failure is counted by kind
            kind = error_kind(err)
        finally:
            done = clock()
            self.inflight -= 1
            e.inflight -= 1
            self.samples.append(Sample(intended, sent, done, e.url, kind))
            if kind is None:
                self.n_ok += 1
                self.pool.succeeded(e)
            else:
                self.n_errors += 1
                if kind != "cancelled":
                    self.pool.failed(e, done)

    def _claim(self, intended: float) -> bool:
        """Count a request due at ``intended`` against max_requests; False when the cap is hit."""
        if intended >= self.measure_from:
            if self.max_requests is not None and self.claimed >= self.max_requests:
                self.stop_reason = "max_requests"
                return False
            self.claimed += 1
        return True

    # -------------------------------------------------------------------------- the two modes
    async def _worker(self) -> None:
        while True:
            now = clock()
            if now >= self.deadline:
                return
            if self.stop_reason == "max_requests":
                return
            e = self.pool.pick(now)
            if e is None:  # every endpoint is out of the rotation (or none present): wait
                when = self.pool.next_available(now)
                wait = 0.1 if when is None else max(0.005, when - now)
                await asyncio.sleep(min(wait, 0.25, max(0.0, self.deadline - now)))
                continue
            now = clock()
            if not self._claim(now):
                return
            await self._send(e, now, closed_loop=True)

    async def _schedule(self) -> None:
        rate = float(self.rate)
        k = 0
        due = self.t0
        while True:
            if due >= self.deadline:
                return
            now = clock()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if not self._claim(due):
                return
            if self.inflight >= self.max_inflight:
                self.drops.append(Drop(due, "inflight_cap"))
            else:
                e = self.pool.pick(now)
                if e is None:
                    self.drops.append(Drop(due, "no_endpoint"))
                else:
                    task = asyncio.create_task(self._send(e, due))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            k += 1
            if self.arrival == "constant":
                due = self.t0 + k / rate
            else:
                due += float(self.rng.exponential(1.0 / rate))
            if due <= clock():
                await asyncio.sleep(0)  # behind schedule: still let responses in between sends

    # -------------------------------------------------------------------------- background
    async def _refresher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.pool.refresh()

    async def _reporter(self, on_progress: Callable[[Progress], Any], interval: float) -> None:
        seen = 0
        last = clock()
        while True:
            await asyncio.sleep(interval)
            now = clock()
            recent = self.samples[seen:]
            seen += len(recent)
            ok_lat = [(s.done - s.intended) * 1000.0 for s in recent if s.error is None]
            p99 = percentile(ok_lat, 99)
            report = Progress(
                elapsed_s=round(now - self.t0, 3),
                phase="drain" if self.draining else "warmup" if now < self.measure_from
                else "measure",
                sent=len(self.samples) + self.inflight,
                completed=self.n_ok, errors=self.n_errors,
                dropped=len(self.drops), inflight=self.inflight,
                rps=round(len(ok_lat) / (now - last), 2) if now > last else 0.0,
                p99_ms=None if p99 is None else round(p99, 3),
                endpoints_live=len(self.pool.live(now)), endpoints_present=len(self.pool.present))
            last = now
            result = on_progress(report)
            if asyncio.iscoroutine(result):
                await result

    # -------------------------------------------------------------------------- the run
    async def run(self, on_progress, progress_interval: float, refresh_interval: float) -> None:
        self.t0 = clock()
        self.measure_from = self.t0 + self.warmup
        self.deadline = self.measure_from + self.duration
        background = []
        if self.pool.dynamic:
            background.append(asyncio.create_task(self._refresher(refresh_interval)))
        if on_progress is not None:
            background.append(asyncio.create_task(self._reporter(on_progress, progress_interval)))
        try:
            if self.mode == "rate":
                await self._schedule()
            else:
                workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
                self.tasks.update(workers)
                for w in workers:
                    w.add_done_callback(self.tasks.discard)
                # the workers end by themselves at the deadline: only their requests can be late
                await self._wait_tasks(self.deadline - clock() + self.timeout_s + 2.0)
            # a run stopped by time stopped at its deadline (the last send was due just before)
            self.stop_at = self.deadline if self.stop_reason == "duration" else \
                min(clock(), self.deadline)
            self.draining = True
            await self._wait_tasks(self.timeout_s + 2.0)
        finally:
            for t in list(self.tasks):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            for t in background:
                t.cancel()
            results = await asyncio.gather(*background, return_exceptions=True)
        for r in results:  # a failing progress callback or endpoint source is the caller's bug
            if isinstance(r, Exception):
                raise r

    async def _wait_tasks(self, timeout: float) -> None:
        end = clock() + max(0.0, timeout)
        while self.tasks and clock() < end:
            await asyncio.wait(set(self.tasks), timeout=min(0.5, max(0.0, end - clock())))


async def run_load(endpoints: EndpointSource, model: str, *, mode: str = "concurrency",
                   rate: float | None = None, concurrency: int | None = None,
                   duration: float = 10.0, max_requests: int | None = None, warmup: float = 0.0,
                   batch_rows: int = 1, inputs_factory: InputsFactory | None = None,
                   on_progress: Callable[[Progress], Any] | None = None,
                   protocol: str = "grpc", model_version: str = "", timeout_s: float = 10.0,
                   max_inflight: int | None = None, arrival: str = "constant", seed: int = 0,
                   skip_after: int = 3, skip_seconds: float = 2.0, refresh_interval: float = 1.0,
                   progress_interval: float = 1.0, pool_size: int | None = None,
                   signature: Signature | None = None) -> LoadResult:
    """Load ``model`` on ``endpoints`` with bounded traffic and return what was measured.

    ``endpoints``: URLs (``host:port`` = ``protocol``, ``grpc://host:port``, ``http://host:port``),
    or a callable returning them (sync or async), re-read every ``refresh_interval`` seconds.
    ``mode``: ``"rate"`` (open loop at ``rate`` req/s, ``arrival`` constant or poisson, at most
    ``max_inflight`` outstanding: default ``rate`` x 1 s within 16..4096) or ``"concurrency"``
    (``concurrency`` closed-loop workers). The run sends for ``warmup`` (not counted) then
    ``duration`` seconds, stopping early after ``max_requests`` measured requests; requests still
    in flight then get up to ``timeout_s`` more, the per-request timeout.

    ``inputs_factory(i)`` gives the tensors of request ``i`` (``{input: array}``, ``batch_rows``
    rows each); ``pool_size`` distinct requests are made up front and sent in turn (default 64,
    or enough to cover every row of a RequestData's .npz source, at most 1024). Without it,
    random tensors of ``signature``, by default the one the first answering endpoint's model
    config declares (:class:`~peakserve.loadgen.data.RequestData`): pass ``signature`` or
    ``inputs_factory`` when the endpoint list may start empty.

    An endpoint that fails ``skip_after`` times in a row is skipped for ``skip_seconds`` (0: never
    skipped). ``on_progress(Progress)`` is called every ``progress_interval`` seconds (it may be
    a coroutine function).
    """
    _check_params(mode, rate, concurrency, duration, max_requests, warmup, batch_rows, arrival,
                  timeout_s)
    if mode == "concurrency":
        max_inflight = concurrency  # the workers are the cap
    elif max_inflight is None:
        max_inflight = min(4096, max(16, math.ceil(rate)))
    if max_inflight < 1:
        raise ValueError("max_inflight must be >= 1")
    pool = EndpointPool(endpoints, default_protocol=protocol, skip_after=skip_after,
                        skip_seconds=skip_seconds, connections=max_inflight, timeout_s=timeout_s)
    try:
        await pool.refresh()
        if inputs_factory is None:
            if signature is None:
                signature = await resolve_signature(pool, model, model_version, timeout_s)
            inputs_factory = RequestData(signature, batch_rows, seed=seed)
        datatypes = {t.name: t.datatype for t in signature.inputs} if signature else {}
        if pool_size is None:
            pool_size = DEFAULT_POOL
            if isinstance(inputs_factory, RequestData) and inputs_factory.source is not None:
                pool_size = min(MAX_POOL, math.ceil(inputs_factory.available_rows
                                                    / inputs_factory.rows))
        arrays = [{n: np.ascontiguousarray(a) for n, a in inputs_factory(i).items()}
                  for i in range(max(1, pool_size))]
        run = _Run(pool, model, model_version, arrays, datatypes, mode=mode, rate=rate,
                   concurrency=concurrency, duration=duration, max_requests=max_requests,
                   warmup=warmup, max_inflight=max_inflight, arrival=arrival, timeout_s=timeout_s,
                   seed=seed)
        await run.run(on_progress, progress_interval, refresh_interval)
    finally:
        await pool.close()
    return summarize(
        run.samples, run.drops, t0=run.t0, measure_from=run.measure_from, stop_at=run.stop_at,
        endpoints={e.url: e.target.protocol for e in pool.endpoints.values()},
        skips={e.url: e.skips for e in pool.endpoints.values()},
        model=model, mode=mode, protocol=protocol,
        rate=float(rate) if mode == "rate" else None,
        concurrency=int(concurrency) if mode == "concurrency" else None,
        arrival=arrival if mode == "rate" else None, batch_rows=batch_rows, warmup_s=warmup,
        duration_s=duration, max_requests=max_requests, stop_reason=run.stop_reason,
        endpoint_refresh_errors=pool.refresh_errors)
