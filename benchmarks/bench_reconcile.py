"""Reconcile benchmark: create latency, time-to-Ready and memory at scale, operator vs a plain client.

Each point is one fresh control plane (DevCluster in a temp dir, KWOK nodes) and one fresh operator process:

1. latency   N ModelDeployments created one after another; for each, seconds from the create
             call until the Deployment child exists AND status.observedGeneration == 1 with
             conditions (polled every ~20 ms). First point only; --latency-count 0 skips it.
2. baseline  a plain client server-side-applies the same rendered children for M names (no
             owner references, its own managed-by label so the operator ignores them) with a
             few threads; wall time until all M Deployments have readyReplicas == 1.
3. operator  M ModelDeployments created with the same number of threads; wall time until all
             M report Ready=True, each object's time from its create to Ready=True, and the
             operator's RSS sampled every 0.25 s.

One count (--scale-count 500) writes benchmarks/results/reconcile.json and reconcile.png. A series
(--scale-count 100,250,500,1000) runs one point per count and writes reconcile-scale.json and
reconcile-scale.png (peak RSS against object count). The PNGs need matplotlib.

    .venv/bin/python benchmarks/bench_reconcile.py [--latency-count 50] [--scale-count 500]
    .venv/bin/python benchmarks/bench_reconcile.py --scale-count 100,250,500,1000 --nodes 8
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if sys.argv[1:2] != ["--operator-census"]:  # the census runs whichever operator PYTHONPATH names
    sys.path.insert(0, str(ROOT / "operator"))  # works without the editable install too

from peakserve_harness.controlplane.cluster import DevCluster  # noqa: E402
from peakserve_harness.controlplane.nodes import GpuNode  # noqa: E402
from peakserve_harness.operator_process import DEV_COMMAND, OperatorProcess  # noqa: E402
from peakserve_harness.samples import model_deployment, small_spec  # noqa: E402
from peakserve_harness.controlplane.tools import ensure_tools  # noqa: E402
from peakserve.cluster.client import ApiException, Kube  # noqa: E402
from peakserve.render import render_children  # noqa: E402
from peakserve.render.names import child_name  # noqa: E402
from peakserve.render.owner import Owner  # noqa: E402
from peakserve.api.validation import parse_spec  # noqa: E402

MD_PATH = "/apis/peakserve.io/v1alpha1/namespaces/{ns}/modeldeployments"
BASELINE_MANAGER = "bench-baseline"
MANAGED_BY = "app.kubernetes.io/managed-by"
RESULTS = ROOT / "benchmarks" / "results"

# Small and valid, with tiny requests so 500 fit on the benchmark nodes.
SPEC: dict[str, Any] = small_spec(cpu="10m", memory="16Mi")

# ---- small helpers ------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"\r\033[K[bench] {msg}", file=sys.stderr, flush=True)


class Progress:
    """One line on stderr, rewritten in place with \\r."""

    def __init__(self, label: str, total: int, status: Callable[[], str] | None = None):
        self.label, self.total, self.started, self.status = label, total, time.monotonic(), status

    def update(self, done: int, extra: str = "") -> None:
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        line = (f"{self.label:<16} [{bar}] {done:>4}/{self.total} {extra:<8} "
                f"{time.monotonic() - self.started:6.1f}s")
        if self.status:
            line += f"  {self.status()}"
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def md_body(name: str, namespace: str) -> dict[str, Any]:
    return model_deployment(name, namespace, copy.deepcopy(SPEC))


def ready_condition(obj: dict[str, Any]) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status")
    return None


def proc_status(pid: int) -> dict[str, float]:
    """VmHWM / VmRSS in MiB and CPU seconds (user+system) of a live process."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = round(int(value.split()[0]) / 1024, 1)  # kB -> MiB
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["cpu_s"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        pass
    return out


class RssSampler:
    """The operator's VmRSS every `interval` s, in a thread: [[seconds since `started`, MiB], ...]."""

    def __init__(self, pid: int, started: float, interval: float = 0.25):
        self.pid, self.started, self.interval = pid, started, interval
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append([round(time.monotonic() - self.started, 2), rss])
            self._stop.wait(self.interval)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> list[list[float]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def now(self) -> str:
        return f"operator RSS {self.samples[-1][1]:.0f} MiB" if self.samples else ""


def latency_summary(latencies: list[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    return {"n": len(latencies), "p50_s": round(percentile(latencies, 50), 2),
            "p95_s": round(percentile(latencies, 95), 2), "max_s": round(max(latencies), 2)}


class ReadyWatch:
    """When each object of a list first reads ready, followed with list + watch in a thread.

    A watch costs the API server one event per change. Polling a list every 0.5 s cost it the whole list each
    time, growing with the objects: 1,000 ModelDeployments are 4 MB of JSON and about 160 ms of API server
    CPU per list, a third of a core at two lists a second, taken from the very phase being measured."""

    def __init__(self, kubeconfig: Path, path: str, query: list[tuple[str, str]], is_ready: Callable[[dict], bool]):
        self.kubeconfig, self.path, self.query, self.is_ready = kubeconfig, path, query, is_ready
        self.ready_at: dict[str, float] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def start(self) -> "ReadyWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def count(self) -> int:
        if self.error and not self._thread.is_alive():
            raise RuntimeError(f"watch of {self.path} failed: {self.error}")
        return len(self.ready_at)

    def _seen(self, obj: dict[str, Any]) -> None:
        if self.is_ready(obj):
            self.ready_at.setdefault(obj["metadata"]["name"], time.monotonic())

    def _run(self) -> None:
        kube = Kube.from_kubeconfig(self.kubeconfig)
        version = None
        while not self._stop.is_set():
            try:
                if version is None:  # (re)list: the objects there now, and where the watch starts
                    listed = kube.call("GET", self.path, query=self.query)
                    for obj in listed.get("items", []):
                        self._seen(obj)
                    version = listed["metadata"]["resourceVersion"]
                version = self._watch(kube, version)
            except Exception as err:  # noqa: BLE001 - a slow API server under load; list again
                self.error = f"{type(err).__name__}: {err}"
                version = None
                self._stop.wait(0.5)

    def _watch(self, kube: Kube, version: str) -> str | None:
        query = [*self.query, ("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", "30")]
        method, url, headers, _, _ = kube.client.param_serialize("GET", self.path, query_params=query,
                                                                 header_params={"Accept": "application/json"},
                                                                 auth_settings=["BearerToken"])
        resp = kube.client.call_api(method, url, header_params=headers, _request_timeout=(10, 60)).response
        try:
            if resp.status != 200:
                raise RuntimeError(f"watch answered {resp.status}")
            for line in resp:
                if self._stop.is_set():
                    return version
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    return None  # 410 Gone: list again
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._seen(obj)
            return version
        finally:
            resp.release_conn()


# ---- memory census: what the operator holds (--census) ----------------------------------------------

CENSUS_FLAG = "--operator-census"  # argv[1] when this file runs the operator itself: DIR, then `run ...`
_JSONISH = (dict, list, tuple, str, int, float, bool, type(None))


def _deep_size(roots: list[Any], seen: set[int]) -> int:
    """sys.getsizeof over the JSON-like data (and kopf's body wrappers, partials) reachable from roots, each once."""
    import gc

    total, stack = 0, list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        module = getattr(type(obj), "__module__", "") or ""
        if isinstance(obj, _JSONISH):
            total += sys.getsizeof(obj)
            if isinstance(obj, dict):
                stack.extend(obj.keys())
                stack.extend(obj.values())
            elif isinstance(obj, (list, tuple)):
                stack.extend(obj)
        elif module.startswith("kopf._cogs.structs") or module == "functools" or type(obj).__name__ in (
                "_WorkItem", "Context"):
            total += sys.getsizeof(obj)
            stack.extend(gc.get_referents(obj))
    return total


def _census() -> dict[str, Any]:
    """Where the operator's memory is, from inside it: the holders this benchmark found to matter."""
    import asyncio
    import collections
    import concurrent.futures.thread as cft
    import gc

    objects = gc.get_objects()
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in Path("/proc/self/status").read_text().splitlines())
              if k in ("VmRSS", "VmHWM", "Threads")}
    seen: set[int] = set()
    calls = []
    for obj in objects:
        if isinstance(obj, cft.ThreadPoolExecutor):  # its SimpleQueue cannot be read in place: take all, put back
            taken = []
            while True:
                try:
                    taken.append(obj._work_queue.get_nowait())
                except Exception:  # noqa: BLE001 - queue.Empty
                    break
            for item in taken:  # this runs on the event loop's thread, the only one that adds: order kept
                obj._work_queue.put(item)
            calls += [item for item in taken if item is not None]
    backlog = [e for obj in objects if isinstance(obj, asyncio.Queue)
               for e in list(obj._queue) if isinstance(e, dict) and "object" in e]
    coroutines = collections.Counter(obj.cr_code.co_name for obj in objects if asyncio.iscoroutine(obj)
                                     and hasattr(obj, "cr_code"))
    types = collections.Counter(f"{getattr(type(o), '__module__', '?')}.{getattr(type(o), '__qualname__', '?')}"
                                for o in objects)
    out: dict[str, Any] = {
        "proc": status,
        "kopf_executor_calls_queued": {"n": len(calls), "mib": round(_deep_size(calls, seen) / 2**20, 1)},
        "kopf_backlog_events": {"n": len(backlog), "mib": round(_deep_size(backlog, seen) / 2**20, 1)},
        "kopf_object_workers": coroutines.get("worker", 0),
        "kopf_resource_memories": types.get("kopf._core.reactor.inventory.ResourceMemory", 0),
        "dicts": types.get("builtins.dict", 0),
        "coroutines": sum(coroutines.values()),
        "top_types": types.most_common(12),
    }
    queues = [o for o in objects if type(o).__name__ == "WorkQueue"]
    if queues:
        q = queues[0]
        out["work_queue"] = {"waiting": len(q._waiting), "active": len(q._active), "delayed": len(q._delayed),
                             "heap": len(q._heap)}
    return out


def operator_census_main(out_dir: Path, argv: list[str]) -> int:
    """Run `peakserve <argv>` in this process; on SIGUSR1, write a census of its memory into out_dir."""
    import signal

    out_dir.mkdir(parents=True, exist_ok=True)
    taken = [0]

    def write(*_: Any) -> None:
        taken[0] += 1
        try:
            (out_dir / f"census-{taken[0]:03d}.json").write_text(json.dumps(_census(), indent=1))
        except Exception as err:  # noqa: BLE001 - a census never stops the operator
            print(f"census failed: {err!r}", file=sys.stderr)

    signal.signal(signal.SIGUSR1, write)
    from peakserve.cli import main as peakserve_main

    return peakserve_main(argv)


def census_at_peak(census_dir: Path) -> dict[str, Any] | None:
    """The census taken at the highest RSS, and the main figures of every census in order."""
    found = [json.loads(p.read_text()) for p in sorted(census_dir.glob("census-*.json"))]
    peak = max(found, key=lambda c: int(c["proc"].get("VmRSS", "0 kB").split()[0]), default=None)
    if peak is not None:
        peak["series"] = [{"rss": c["proc"].get("VmRSS"), "calls_queued": c["kopf_executor_calls_queued"]["n"],
                           "backlog_events": c["kopf_backlog_events"]["n"], "object_workers": c["kopf_object_workers"],
                           "work_queue": c.get("work_queue")} for c in found]
    return peak


class Clients:
    """One Kube per thread: the kubernetes ApiClient is not documented as thread-safe."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig, self.local = kubeconfig, threading.local()

    def get(self) -> Kube:
        if not hasattr(self.local, "kube"):
            self.local.kube = Kube.from_kubeconfig(self.kubeconfig)
        return self.local.kube


def create_namespace(kube: Kube, ns: str) -> None:
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # Pods need the default ServiceAccount, which the controller-manager creates shortly after.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kube.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
            return
        except ApiException as err:
            if err.status != 404:
                raise
        time.sleep(0.2)
    raise RuntimeError(f"no default ServiceAccount in {ns} after 30s")


def delete_namespace(kube: Kube, ns: str, timeout: float) -> float:
    """Delete and wait until it is gone; returns the seconds it took."""
    started = time.monotonic()
    try:
        kube.call("DELETE", f"/api/v1/namespaces/{ns}")
    except ApiException as err:
        if err.status != 404:
            raise
    progress = Progress(f"delete {ns}", 1)
    while time.monotonic() - started < timeout:
        try:
            kube.call("GET", f"/api/v1/namespaces/{ns}")
        except ApiException as err:
            if err.status == 404:
                progress.update(1, "gone")
                progress.close()
                return time.monotonic() - started
            raise
        progress.update(0, "deleting")
        time.sleep(1.0)
    progress.close()
    raise RuntimeError(f"namespace {ns} still present after {timeout}s")


def wait_convergence(label: str, total: int, count_ready: Callable[[], int], started: float,
                     timeout: float, interval: float, creators_done: Callable[[], bool],
                     healthy: Callable[[], bool] = lambda: True,
                     status: Callable[[], str] | None = None) -> tuple[float | None, list[list[float]]]:
    """Poll count_ready() every `interval` s until it reaches total (and the writers are done).

    Returns (wall seconds from `started` to the first poll that saw all ready, or None on
    timeout) and the samples [[seconds, ready], ...].
    """
    progress = Progress(label, total, status)
    samples: list[list[float]] = []
    try:
        while True:
            now = time.monotonic()
            if now - started > timeout:
                return None, samples
            if not healthy():
                raise RuntimeError("the operator process died")
            try:
                ready = count_ready()
            except ApiException as err:  # a slow list under load; keep polling
                log(f"{label}: list failed ({err.status} {err.reason}); retrying")
                ready = samples[-1][1] if samples else 0
            seen = time.monotonic() - started
            samples.append([round(seen, 3), ready])
            progress.update(int(ready), "ready")
            if ready >= total and creators_done():
                return seen, samples
            time.sleep(max(0.0, interval - (time.monotonic() - now)))
    finally:
        progress.close()


def per_second(samples: list[list[float]]) -> list[int]:
    """Ready count at each whole second (last sample at or before it)."""
    if not samples:
        return []
    out, i, last = [], 0, 0
    for sec in range(int(samples[-1][0]) + 1):
        while i < len(samples) and samples[i][0] <= sec:
            last = int(samples[i][1])
            i += 1
        out.append(last)
    out.append(int(samples[-1][1]))
    return out


def settle(pid: int, quiet_cpu_s: float = 0.1, window: float = 2.0, timeout: float = 90) -> float:
    """Wait until the operator uses < quiet_cpu_s CPU seconds per window (bounded); returns seconds waited.

    Namespace teardown leaves the operator busy for a while (status refreshes as pods go,
    Event posts retried into the terminating namespace); the next phase starts once it is quiet.
    """
    started = time.monotonic()
    last = proc_status(pid).get("cpu_s")
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = proc_status(pid).get("cpu_s")
        if last is None or now is None or now - last < quiet_cpu_s:
            break
        last = now
    return round(time.monotonic() - started, 1)


# ---- phases -----------------------------------------------------------------------------------

def phase_latency(kube: Kube, ns: str, count: int, timeout: float, interval: float) -> dict[str, Any]:
    create_namespace(kube, ns)
    path = MD_PATH.format(ns=ns)
    latencies: list[float] = []
    progress = Progress("latency", count)
    try:
        # Round 0 is an uncounted warm-up: the operator's first ModelDeployment watch may still be
        # retrying (429 "storage is (re)initializing") right after the CRD is established.
        for i in range(count + 1):
            name = "warmup" if i == 0 else f"lat-{i:03d}"
            t0 = time.perf_counter()
            kube.create(path, md_body(name, ns))
            have_child = have_status = False
            while True:
                if not have_child:
                    have_child = kube.get("apps/v1", "Deployment", ns, child_name(name)) is not None
                if have_child and not have_status:
                    body = kube.get("peakserve.io/v1alpha1", "ModelDeployment", ns, name) or {}
                    status = body.get("status") or {}
                    have_status = status.get("observedGeneration") == 1 and bool(status.get("conditions"))
                elapsed = time.perf_counter() - t0
                if have_child and have_status:
                    if i > 0:
                        latencies.append(elapsed)
                    break
                if elapsed > timeout:
                    raise RuntimeError(f"{ns}/{name}: no Deployment/status after {timeout}s "
                                       f"(deployment={have_child}, status={have_status})")
                time.sleep(interval)
            if latencies:
                progress.update(len(latencies), f"{latencies[-1] * 1000:.0f}ms")
    finally:
        progress.close()
    return {
        "count": len(latencies),
        "poll_interval_s": interval,
        "p50_s": percentile(latencies, 50), "p90_s": percentile(latencies, 90),
        "p99_s": percentile(latencies, 99), "max_s": max(latencies), "min_s": min(latencies),
        "mean_s": statistics.fmean(latencies),
        "samples_s": [round(x, 4) for x in latencies],
        "warmup_excluded": True,
        "first_s": latencies[0],
        "p50_s_excluding_first": percentile(latencies[1:], 50) if len(latencies) > 1 else None,
        "p99_s_excluding_first": percentile(latencies[1:], 99) if len(latencies) > 1 else None,
    }


def baseline_children(name: str, ns: str) -> list[dict[str, Any]]:
    """The operator's rendered children, ownerless and labelled so the operator ignores them."""
    children = render_children(Owner(name, ns, uid=str(uuid.uuid4())), parse_spec(copy.deepcopy(SPEC)))
    for child in children:
        meta = child["metadata"]
        meta.pop("ownerReferences", None)  # no owner exists: the garbage collector would delete them
        meta["labels"][MANAGED_BY] = BASELINE_MANAGER
        template = (child.get("spec") or {}).get("template")
        if template:  # the operator watches pods by this label too
            template["metadata"]["labels"][MANAGED_BY] = BASELINE_MANAGER
    return children


def phase_baseline(clients: Clients, ns: str, count: int, threads: int, timeout: float,
                   interval: float) -> dict[str, Any]:
    kube = clients.get()
    create_namespace(kube, ns)
    names = [f"base-{i:03d}" for i in range(count)]
    errors: list[str] = []
    applied_at: list[float] = []

    def apply_one(name: str) -> None:
        try:
            for child in baseline_children(name, ns):
                clients.get().apply(child, manager=BASELINE_MANAGER)
            applied_at.append(time.monotonic())
        except Exception as err:  # noqa: BLE001 - reported, and the wait then times out
            errors.append(f"{name}: {err}")

    watch = ReadyWatch(clients.kubeconfig, f"/apis/apps/v1/namespaces/{ns}/deployments",
                       [("labelSelector", f"{MANAGED_BY}={BASELINE_MANAGER}")],
                       lambda d: ((d.get("status") or {}).get("readyReplicas") or 0) >= 1).start()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="baseline")
    started = time.monotonic()
    futures = [pool.submit(apply_one, n) for n in names]
    try:
        wall, samples = wait_convergence("scale/baseline", count, watch.count, started, timeout, interval,
                                         creators_done=lambda: all(f.done() for f in futures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        watch.stop()
    if wall is not None:  # the exact moment the last one turned ready, not the poll that saw it
        wall = max(watch.ready_at.values()) - started
    if errors:
        log(f"baseline: {len(errors)} apply errors, first: {errors[0]}")
    return {"count": count, "threads": threads, "wall_s": wall, "converged": wall is not None,
            "apply_errors": len(errors), "first_errors": errors[:5], "poll_interval_s": interval,
            "applies_done_s": round(max(applied_at) - started, 3) if applied_at else None,
            "samples": samples, "per_second_ready": per_second(samples)}


def phase_operator(clients: Clients, operator: OperatorProcess, ns: str, count: int, threads: int,
                   timeout: float, interval: float, census_every: float = 0.0) -> dict[str, Any]:
    kube = clients.get()
    create_namespace(kube, ns)
    path = MD_PATH.format(ns=ns)
    names = [f"md-{i:04d}" for i in range(count)]
    errors: list[str] = []
    created_at: dict[str, float] = {}  # when the create call returned

    def create_one(name: str) -> None:
        try:
            clients.get().create(path, md_body(name, ns))
            created_at[name] = time.monotonic()
        except Exception as err:  # noqa: BLE001
            errors.append(f"{name}: {err}")

    last_census = [time.monotonic()]
    watch = ReadyWatch(clients.kubeconfig, path, [], lambda o: ready_condition(o) == "True").start()
    ready_at = watch.ready_at  # the moment the watch showed each one Ready=True

    def count_ready() -> int:
        if census_every and time.monotonic() - last_census[0] >= census_every:
            os.kill(operator.proc.pid, signal.SIGUSR1)  # the census is written by the operator (--census)
            last_census[0] = time.monotonic()
        return watch.count()

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="creator")
    started = time.monotonic()
    rss = RssSampler(operator.proc.pid, started).start()
    futures = [pool.submit(create_one, n) for n in names]
    try:
        wall, samples = wait_convergence("scale/operator", count, count_ready, started, timeout, interval,
                                         creators_done=lambda: all(f.done() for f in futures),
                                         healthy=operator.alive, status=rss.now)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        watch.stop()
        rss_samples = rss.stop()
    if wall is not None:
        wall = max(ready_at.values()) - started
    if errors:
        log(f"operator: {len(errors)} create errors, first: {errors[0]}")
    # Time from create to Ready=True: for every object, and for the first tenth created (early in the burst:
    # these wait on no backlog of creates, so they show whether status follows the children during the burst).
    order = sorted(created_at, key=created_at.get)
    latency = {n: ready_at[n] - created_at[n] for n in order if n in ready_at}
    early = order[:max(1, len(order) // 10)]
    result: dict[str, Any] = {
        "count": count, "threads": threads, "wall_s": wall, "converged": wall is not None,
        "create_errors": len(errors), "first_errors": errors[:5], "poll_interval_s": interval,
        "creates_done_s": round(max(created_at.values()) - started, 3) if created_at else None,
        "ready_latency": {"all": latency_summary(list(latency.values())),
                          "first_tenth_created": latency_summary([latency[n] for n in early if n in latency])},
        "samples": samples, "per_second_ready": per_second(samples),
        "rss_samples": rss_samples,
        "rss_peak_sampled_mib": max((r for _, r in rss_samples), default=None),
    }
    if wall is None:  # what did the stragglers say?
        items = kube.call("GET", path).get("items", [])
        reasons: dict[str, int] = {}
        for o in items:
            cond = next((c for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
            key = f"{cond['status']}/{cond.get('reason')}" if cond else "no-status"
            reasons[key] = reasons.get(key, 0) + 1
        result["ready_reasons_at_timeout"] = reasons
    return result


# ---- output -------------------------------------------------------------------------------------

def plot(results: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return f"matplotlib unavailable ({err}); PNG not written"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    lat = results["latency"]
    xs = sorted(x * 1000 for x in lat["samples_s"])
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    left.step(xs, ys, where="post", color="tab:blue")
    for q, style in (("p50_s", ":"), ("p90_s", "--"), ("p99_s", "-.")):
        left.axvline(lat[q] * 1000, color="grey", linestyle=style, linewidth=1,
                     label=f"{q[:-2]} {lat[q] * 1000:.0f} ms")
    left.set_xlabel("create -> Deployment exists + status written (ms)")
    left.set_ylabel("fraction of creates")
    left.set_title(f"Create latency, {lat['count']} ModelDeployments one at a time")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="lower right")
    for key, label, color in (("operator", "operator (ModelDeployments -> Ready=True)", "tab:red"),
                              ("baseline", "plain client (SSA children -> readyReplicas=1)", "tab:green")):
        phase = results["scale"][key]
        if phase["samples"]:
            t, r = zip(*phase["samples"])
            wall = f"{phase['wall_s']:.1f}s" if phase["wall_s"] is not None else "did not converge"
            right.plot(t, r, label=f"{label}: {wall}", color=color)
    rss = results["scale"]["operator"].get("rss_samples")
    if rss:  # the operator's memory through its scale phase
        twin = right.twinx()
        t, r = zip(*rss)
        twin.plot(t, r, color="tab:purple", linewidth=0.8, alpha=0.7)
        twin.set_ylabel("operator RSS (MiB)", color="tab:purple")
        twin.set_ylim(0, max(r) * 1.3)
    right.axhline(results["scale"]["count"], color="grey", linewidth=0.8, linestyle=":")
    right.set_xlabel("seconds since first request")
    right.set_ylabel("ready")
    ratio = results["scale"].get("ratio")
    right.set_title(f"Convergence of {results['scale']['count']}"
                    + (f" (ratio {ratio:.2f}x)" if ratio else ""))
    right.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"peakserve reconcile benchmark, {results['machine']['nproc']} CPUs, "
                 f"{results['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def plot_series(results: dict[str, Any], path: Path, goal_mib: float = 250) -> str | None:
    """Peak RSS against object count, RSS through each operator phase, wall times and ratio, Ready latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return f"matplotlib unavailable ({err}); PNG not written"
    points = [pt for pt in results["points"] if (pt.get("scale") or {}).get("operator")]
    if not points:
        return "no point finished; PNG not written"
    counts = [pt["count"] for pt in points]
    fig, ((mem, curve), (wall, ready)) = plt.subplots(2, 2, figsize=(12, 8.5))

    peaks = [pt["operator"].get("peak_rss_mib") for pt in points]
    starts = [pt["operator"].get("rss_mib_at_start") for pt in points]
    mem.plot(counts, peaks, "o-", color="tab:purple", label="peak RSS (VmHWM) of the operator process")
    mem.plot(counts, starts, "s--", color="grey", linewidth=1, label="RSS right after start")
    before = (results.get("before") or {}).get("summary") or []
    if before:
        bx = [b["count"] for b in before if b.get("operator_peak_rss_mib") is not None]
        by = [b["operator_peak_rss_mib"] for b in before if b.get("operator_peak_rss_mib") is not None]
        mem.plot(bx, by, "o:", color="tab:grey", label=f"before ({(results['before'].get('date') or '')[:10]})")
        for x, y in zip(bx, by):
            mem.annotate(f"{y:.0f} MiB", (x, y), textcoords="offset points", xytext=(0, 8), ha="center",
                         fontsize=8, color="tab:grey")
    mem.axhline(goal_mib, color="tab:red", linestyle=":", linewidth=1, label=f"goal: {goal_mib:.0f} MiB at 1,000")
    for x, y in zip(counts, peaks):
        if y is not None:
            mem.annotate(f"{y:.0f} MiB", (x, y), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
    mem.set_xlabel("ModelDeployments")
    mem.set_ylabel("MiB")
    mem.set_ylim(0, max(goal_mib, *(y for y in peaks + [b.get("operator_peak_rss_mib") for b in before]
                                    if y is not None)) * 1.2)
    marginal = results.get("marginal_kib_per_object")
    mem.set_title("Operator memory against object count"
                  + (f" ({marginal:.0f} KiB per added object)" if marginal is not None else ""))
    mem.grid(alpha=0.3)
    mem.legend(loc="upper left", fontsize=8)

    for pt in points:
        rss = pt["scale"]["operator"].get("rss_samples")
        if rss:
            t, r = zip(*rss)
            curve.plot(t, r, label=f"{pt['count']} objects")
    curve.set_xlabel("seconds since the first create")
    curve.set_ylabel("operator RSS (MiB)")
    curve.set_title("RSS through each operator scale phase")
    curve.set_ylim(bottom=0)
    curve.grid(alpha=0.3)
    curve.legend(loc="lower right", fontsize=8)

    op_wall = [pt["scale"]["operator"].get("wall_s") for pt in points]
    base_wall = [(pt["scale"].get("baseline") or {}).get("wall_s") for pt in points]
    wall.plot(counts, op_wall, "o-", color="tab:red", label="operator: all Ready=True")
    wall.plot(counts, base_wall, "o-", color="tab:green", label="plain client: all readyReplicas=1")
    if before:
        wall.plot([b["count"] for b in before], [b.get("operator_wall_s") for b in before], "o:", color="tab:red",
                  alpha=0.5, label="operator, before (its own run)")
        wall.plot([b["count"] for b in before], [b.get("baseline_wall_s") for b in before], "o:", color="tab:green",
                  alpha=0.5, label="plain client, in the before run")
    for x, y, pt in zip(counts, op_wall, points):
        ratio = pt["scale"].get("ratio")
        if y is not None and ratio:
            wall.annotate(f"{ratio:.2f}x", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    wall.set_xlabel("ModelDeployments")
    wall.set_ylabel("seconds")
    wall.set_title("Time to converge (ratio operator / plain client, same run)")
    wall.grid(alpha=0.3)
    wall.legend(loc="upper left", fontsize=8)

    for key, label, color in (("first_tenth_created", "first tenth created", "tab:blue"),
                              ("all", "all objects", "tab:orange")):
        stats = [(pt["scale"]["operator"].get("ready_latency") or {}).get(key) or {} for pt in points]
        ready.plot(counts, [st.get("p50_s") for st in stats], "o-", color=color, label=f"p50, {label}")
        ready.plot(counts, [st.get("p95_s") for st in stats], "o--", color=color, label=f"p95, {label}")
    if before:
        ready.plot([b["count"] for b in before],
                   [(b.get("ready_latency_first_tenth_s") or {}).get("p50_s") for b in before], "o:",
                   color="tab:blue", alpha=0.5, label="p50, first tenth created, before")
    ready.set_xlabel("ModelDeployments")
    ready.set_ylabel("seconds from create to Ready=True")
    ready.set_title("Ready latency during the create burst")
    ready.grid(alpha=0.3)
    ready.legend(loc="upper left", fontsize=8)

    args = results["command"].split("bench_reconcile.py")[-1].strip()
    if results.get("before"):
        args = args.split(" --before")[0] + " --before <the commit before>"
    fig.suptitle(f"peakserve at scale, {results['machine']['nproc']} CPUs, {results['date'][:10]}: {args}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def versions(kube: Kube) -> dict[str, str]:
    out = {"python": platform.python_version()}
    try:
        v = kube.call("GET", "/version")
        out["kube_apiserver"] = v.get("gitVersion", "?")
    except ApiException:
        out["kube_apiserver"] = "?"
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("kopf", "kubernetes", "peakserve"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "?"
    return out


def api_requests(kube: Kube) -> dict[str, dict[str, float]]:
    """The API server's request counters, summed by verb and resource (dry runs apart): how many requests
    (apiserver_request_total) and the seconds the server spent on them (apiserver_request_duration_seconds_sum).
    Every client's requests count: the controllers' and KWOK's are in both phases alike."""
    method, url, headers, _, _ = kube.client.param_serialize("GET", "/metrics", header_params={"Accept": "text/plain"},
                                                             auth_settings=["BearerToken"])
    resp = kube.client.call_api(method, url, header_params=headers, _request_timeout=30)
    resp.read()
    if resp.status != 200:
        raise ApiException(http_resp=resp)
    totals: dict[str, dict[str, float]] = {"count": {}, "seconds": {}}
    for line in resp.data.decode().splitlines():
        which = ("count" if line.startswith("apiserver_request_total{")
                 else "seconds" if line.startswith("apiserver_request_duration_seconds_sum{") else None)
        if which is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{"):line.rindex("}")]))
        key = f"{labels.get('verb')} {labels.get('resource')}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
        key += " (dry run)" if labels.get("dry_run") else ""
        totals[which][key] = totals[which].get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def cpu_seconds(cluster: DevCluster, operator: OperatorProcess) -> dict[str, float]:
    """CPU seconds used so far by each control-plane process, the operator and this benchmark (its clients and
    watches): on two cores they all share, a phase's wall time follows the CPU it costs in all of them."""
    pids = {**cluster._state().get("pids", {}), "operator": operator.proc.pid}
    out = {name: proc_status(pid).get("cpu_s") or 0.0 for name, pid in pids.items()}
    times = os.times()
    out["benchmark"] = times.user + times.system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
    delta["total"] = round(sum(delta.values()), 2)
    return delta


def requests_per_object(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                        count: int) -> dict[str, dict[str, float]]:
    """What one phase asked of the API server, per object it made, largest first (watches and leases left out):
    requests, and milliseconds of the server's time."""
    out: dict[str, dict[str, float]] = {}
    for which, scale, floor in (("count", 1.0, 0.05), ("seconds", 1000.0, 0.5)):
        delta = {k: (v - before[which].get(k, 0.0)) * scale / count for k, v in after[which].items()
                 if not k.startswith("WATCH") and "leases" not in k}
        rows = {k: round(v, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v >= floor}
        rows["total"] = round(sum(delta.values()), 2)
        out["requests" if which == "count" else "server_ms"] = rows
    return out


def install_crd(kubeconfig: Path, attempts: int = 3) -> None:
    """Apply the CRD and wait until it is established. `kubectl wait` right after a fresh API server's first
    CRD now and then fails at once ("not found" while discovery catches up): that is tried again."""
    kubectl = str(ensure_tools(log)["kubectl"])
    subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True, timeout=90)
    for attempt in range(attempts):
        done = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for", "condition=established",
                               "--timeout=60s", "crd/modeldeployments.peakserve.io"], capture_output=True, timeout=90)
        if done.returncode == 0:
            return
        log(f"kubectl wait for the CRD: {done.stderr.decode(errors='replace').strip()}"
            + ("; trying again" if attempt + 1 < attempts else ""))
        time.sleep(2)
    raise RuntimeError("the ModelDeployment CRD was not established")


def run_point(args: argparse.Namespace, count: int, latency_count: int, work: Path) -> tuple[dict[str, Any], bool]:
    """One fresh control plane and operator: [latency,] baseline, operator. Returns (results, converged)."""
    nodes = tuple(GpuNode(f"bench-a10-{i}", "NVIDIA-A10", gpus=160, cpu="512", memory="4Ti", pods="250")
                  for i in range(args.nodes))
    cluster = DevCluster(work / "cluster", log=log)
    census_dir = work / "census"
    command = ((sys.executable, str(Path(__file__).resolve()), CENSUS_FLAG, str(census_dir)) if args.census
               else DEV_COMMAND)
    operator = OperatorProcess(cluster.kubeconfig, work / "operator.log", args.drift_interval, command=command)
    results: dict[str, Any] = {"count": count, "nodes": [dataclasses.asdict(n) for n in nodes],
                               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    converged = False
    try:
        t = time.monotonic()
        cluster.up(nodes=nodes, timeout=180)
        install_crd(cluster.kubeconfig)
        kube = Kube.from_kubeconfig(cluster.kubeconfig)
        clients = Clients(cluster.kubeconfig)
        results["versions"] = versions(kube)
        operator.start()
        results["operator"] = {"argv": operator.argv[1:], "pid": operator.proc.pid,
                               "rss_mib_at_start": proc_status(operator.proc.pid).get("VmRSS")}
        results["setup_s"] = round(time.monotonic() - t, 1)
        log(f"{count} objects: control plane + CRD + operator ready in {results['setup_s']}s")
        cpu = {"start": proc_status(operator.proc.pid).get("cpu_s")}

        # 1. latency
        if latency_count:
            results["latency"] = phase_latency(kube, "bench-latency", latency_count, args.latency_timeout, 0.02)
            lat = results["latency"]
            log(f"latency p50 {lat['p50_s'] * 1000:.0f} ms, p90 {lat['p90_s'] * 1000:.0f} ms, "
                f"p99 {lat['p99_s'] * 1000:.0f} ms, max {lat['max_s'] * 1000:.0f} ms")
            cpu["after_latency"] = proc_status(operator.proc.pid).get("cpu_s")
            # Free the GPUs and quiet the operator before the scale phases, so both start from the same state.
            results["latency"]["namespace_delete_s"] = round(delete_namespace(kube, "bench-latency", 300), 1)
            results["latency"]["operator_settle_s"] = settle(operator.proc.pid)

        # 2. baseline
        scale: dict[str, Any] = {"count": count, "threads": args.threads}
        results["scale"] = scale
        requests_before, cpu_before = api_requests(kube), cpu_seconds(cluster, operator)
        scale["baseline"] = phase_baseline(clients, "bench-baseline", count, args.threads, args.scale_timeout, 0.25)
        scale["baseline"]["cpu_s"] = cpu_delta(cpu_before, cpu_seconds(cluster, operator))
        scale["baseline"]["api_requests_per_object"] = requests_per_object(requests_before, api_requests(kube), count)
        cpu["after_baseline"] = proc_status(operator.proc.pid).get("cpu_s")
        log(f"baseline: {scale['baseline']['wall_s'] or float('nan'):.2f}s")
        scale["baseline"]["namespace_delete_s"] = round(delete_namespace(kube, "bench-baseline", 600), 1)
        scale["baseline"]["operator_settle_s"] = settle(operator.proc.pid)

        # 3. operator
        cpu["before_operator"] = proc_status(operator.proc.pid).get("cpu_s")
        results["operator"]["rss_mib_before_scale"] = proc_status(operator.proc.pid).get("VmRSS")
        metrics_before = operator.metrics()
        requests_before, cpu_before = api_requests(kube), cpu_seconds(cluster, operator)
        scale["operator"] = phase_operator(clients, operator, "bench-operator", count, args.threads,
                                           args.scale_timeout, 0.25, census_every=args.census)
        scale["operator"]["cpu_s"] = cpu_delta(cpu_before, cpu_seconds(cluster, operator))
        scale["operator"]["api_requests_per_object"] = requests_per_object(requests_before, api_requests(kube), count)
        if args.census:  # one more at the end, then the one taken at the highest RSS
            os.kill(operator.proc.pid, signal.SIGUSR1)
            time.sleep(3)
            results["census_at_peak"] = census_at_peak(census_dir)
        cpu["after_operator"] = proc_status(operator.proc.pid).get("cpu_s")
        op = scale["operator"]
        early = op["ready_latency"]["first_tenth_created"] or {}
        log(f"operator: {op['wall_s'] or float('nan'):.2f}s; create -> Ready p50 {early.get('p50_s')} s, "
            f"p95 {early.get('p95_s')} s for the first tenth created")

        # 4. ratio, memory, operator counters
        if scale["baseline"]["wall_s"] and op["wall_s"]:
            scale["ratio"] = round(op["wall_s"] / scale["baseline"]["wall_s"], 3)
        mem = proc_status(operator.proc.pid)
        metrics_after = operator.metrics()
        results["operator"].update({
            "peak_rss_mib": mem.get("VmHWM"), "rss_mib_at_end": mem.get("VmRSS"),
            "peak_rss_kib_per_object": (round((mem["VmHWM"] - results["operator"]["rss_mib_at_start"]) * 1024 / count, 1)
                                        if mem.get("VmHWM") and results["operator"]["rss_mib_at_start"] else None),
            "cpu_s": cpu, "cpu_s_scale_phase": (round(cpu["after_operator"] - cpu["before_operator"], 2)
                                                if None not in (cpu["after_operator"], cpu["before_operator"])
                                                else None),
            "metrics_scale_phase": {k: round(v - metrics_before.get(k, 0.0), 3) for k, v in metrics_after.items()
                                    if "_total" in k or "_sum" in k or "_count" in k},
            "metrics_at_end": metrics_after,
        })
        results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        converged = bool(scale["baseline"]["converged"] and op["converged"])
        if not converged:
            log("a scale phase did not converge; operator log tail:\n" + operator.tail())
    except Exception as err:
        stderr = getattr(err, "stderr", None)  # a kubectl step: its own words
        results["error"] = f"{type(err).__name__}: {err}" + (f" ({stderr.decode(errors='replace').strip()})"
                                                             if isinstance(stderr, bytes) and stderr else "")
        log(f"FAILED: {results['error']}\n--- operator log tail ({operator.log_path}) ---\n{operator.tail()}")
    finally:
        if operator.proc is not None and operator.alive():
            mem = proc_status(operator.proc.pid)
            results.setdefault("operator", {}).setdefault("peak_rss_mib", mem.get("VmHWM"))
        operator.stop()
        cluster.down(quiet=True)
        results["operator_log_lines"] = (len(operator.log_path.read_text(errors="replace").splitlines())
                                         if operator.log_path.exists() else 0)
    return results, converged


def plot_cost(before: dict[str, Any], after: dict[str, Any], path: Path) -> str | None:
    """Where the CPU went (stacked by process) and how many requests the API server served per object: the
    plain client, then the operator before and after a change. On two cores every process shares the CPU, so
    the bars' heights are what the wall times follow."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return f"matplotlib unavailable ({err}); PNG not written"
    bars = [("plain client", after["scale"]["baseline"]), ("operator, before", before["scale"]["operator"]),
            ("operator, after", after["scale"]["operator"])]
    procs = [k for k in bars[0][1]["cpu_s"] if k != "total"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bottoms = [0.0] * len(bars)
    for proc in procs:
        heights = [phase["cpu_s"].get(proc, 0.0) for _, phase in bars]
        left.bar([b[0] for b in bars], heights, bottom=bottoms, label=proc)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, (_, phase) in enumerate(bars):
        left.annotate(f"wall {phase['wall_s']:.0f} s", (i, bottoms[i]), ha="center", va="bottom", fontsize=8)
    left.set_ylabel("CPU seconds in the phase")
    left.set_title(f"CPU by process, {after['scale']['count']} objects, {after['machine'].get('nproc', '?')} cores")
    left.legend(fontsize=7)
    requests = [phase["api_requests_per_object"]["requests"]["total"] for _, phase in bars]
    right.bar([b[0] for b in bars], requests, color=["tab:gray", "tab:red", "tab:green"])
    right.set_ylabel("API requests per object (watches and leases not counted)")
    right.set_title("What each phase asked of the API server")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def summary(point: dict[str, Any]) -> dict[str, Any]:
    """The figures of one point, for the console and the table in BENCHMARKS.md."""
    scale, op = point.get("scale") or {}, point.get("operator") or {}
    ready = ((scale.get("operator") or {}).get("ready_latency")) or {}
    return {"count": point["count"], "baseline_wall_s": (scale.get("baseline") or {}).get("wall_s"),
            "operator_wall_s": (scale.get("operator") or {}).get("wall_s"), "ratio": scale.get("ratio"),
            "operator_peak_rss_mib": op.get("peak_rss_mib"), "peak_rss_kib_per_object": op.get("peak_rss_kib_per_object"),
            "ready_latency_first_tenth_s": ready.get("first_tenth_created"), "ready_latency_all_s": ready.get("all")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-count", type=int, default=50, help="0 skips the latency phase")
    p.add_argument("--scale-count", default="500",
                   help="objects per scale phase; a comma-separated list runs one point (fresh control plane and "
                        "operator) per count, e.g. 100,250,500,1000")
    p.add_argument("--threads", type=int, default=4, help="client threads for both scale phases")
    p.add_argument("--nodes", type=int, default=4, help="simulated A10 nodes (160 GPUs, 250 pods each)")
    p.add_argument("--drift-interval", type=float, default=300)  # the operator's own default
    p.add_argument("--latency-timeout", type=float, default=30, help="per create, seconds")
    p.add_argument("--scale-timeout", type=float, default=1200, help="per scale phase, seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    p.add_argument("--census", type=float, default=0.0, metavar="SECONDS",
                   help="every SECONDS of the operator phase, the operator writes a census of what holds its memory "
                        "(kopf's queued handler calls and backlogs, per-object records, the work queue); the one at "
                        "the highest RSS goes into the results. It stops the operator for a moment: not for timings")
    p.add_argument("--before", type=Path, help="a reconcile-scale.json of an earlier build (e.g. the commit before a "
                   "change, run with PYTHONPATH at its operator/): its figures are kept and drawn beside these")
    p.add_argument("--plot-cost", type=Path, nargs=3, metavar=("BEFORE", "AFTER", "PNG"),
                   help="draw, from two single-count results (reconcile.json of two builds), the CPU each process "
                        "spent in each scale phase and the API requests per object; runs nothing")
    args = p.parse_args(argv)
    if args.plot_cost:
        before, after, png = args.plot_cost
        print(plot_cost(json.loads(before.read_text()), json.loads(after.read_text()), png) or f"wrote {png}")
        return 0
    try:
        counts = [int(c) for c in str(args.scale_count).split(",") if c.strip()]
    except ValueError:
        p.error("--scale-count: a count or a comma-separated list of counts")
    if not counts or min(*counts, args.threads, args.nodes) < 1 or args.latency_count < 0:
        p.error("counts, threads and nodes must be >= 1")
    need = args.latency_count + max(counts)  # baseline and operator never run at the same time
    if need > 160 * args.nodes or need > 250 * args.nodes:
        p.error(f"{args.nodes} nodes cannot hold {need} single-GPU pods")
    series = len(counts) > 1

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peakserve-bench-"))
    log(f"work dir {work}")
    results: dict[str, Any] = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "spec": SPEC,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    rc = 0
    points: list[dict[str, Any]] = []
    try:
        for index, count in enumerate(counts):
            point, converged = run_point(args, count, args.latency_count if index == 0 else 0,
                                         work / f"point-{count}")
            points.append(point)
            if not converged:
                rc = 1
                break
    except KeyboardInterrupt:
        rc = 130
    finally:
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if series:
            if args.before:
                before = json.loads(args.before.read_text())
                results["before"] = {"command": before.get("command"), "date": before.get("date"),
                                     "summary": before.get("summary"),
                                     "marginal_kib_per_object": before.get("marginal_kib_per_object")}
            results["points"] = points
            results["summary"] = [summary(pt) for pt in points]
            peaks = [(pt["count"], (pt.get("operator") or {}).get("peak_rss_mib")) for pt in points]
            peaks = [(c, m) for c, m in peaks if m is not None]
            if len(peaks) > 1 and peaks[-1][0] > peaks[0][0]:  # what one more object costs, start-up aside
                results["marginal_kib_per_object"] = round((peaks[-1][1] - peaks[0][1]) * 1024
                                                            / (peaks[-1][0] - peaks[0][0]), 1)
            stem = "reconcile-scale"
        else:  # one point: the layout reconcile.json always had
            pt = points[0] if points else {}
            results.update({k: v for k, v in pt.items() if k != "count"})
            results["summary"] = [summary(pt)] if pt else []
            stem = "reconcile"
        json_path = args.out / f"{stem}.json"
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
        if series and points:
            problem = plot_series(results, args.out / f"{stem}.png")
            log(problem or f"wrote {args.out / f'{stem}.png'}")
        elif not series and "latency" in results and "operator" in (results.get("scale") or {}):
            problem = plot(results, args.out / f"{stem}.png")
            log(problem or f"wrote {args.out / f'{stem}.png'}")
        if args.keep or rc != 0:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if rc == 0:
        out = results["summary"]
        if not series and "latency" in results:
            lat = results["latency"]
            out = {**out[0], **{f"latency_{q}": round(lat[f"{q}_s"], 4) for q in ("p50", "p90", "p99", "max")}}
        print(json.dumps(out, indent=2))
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == CENSUS_FLAG:
        sys.exit(operator_census_main(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit(main())
