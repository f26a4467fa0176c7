"""Reconcile benchmark: create latency and time-to-Ready at scale, operator vs a plain client.

One run, one fresh control plane (DevCluster in a temp dir, KWOK nodes), one operator process:

1. latency   N ModelDeployments created one after another; for each, seconds from the create
             call until the Deployment child exists AND status.observedGeneration == 1 with
             conditions (polled every ~20 ms).
2. baseline  a plain client server-side-applies the same rendered children for M names (no
             owner references, its own managed-by label so the operator ignores them) with a
             few threads; wall time until all M Deployments have readyReplicas == 1.
3. operator  M ModelDeployments created with the same number of threads; wall time until all
             M report Ready=True.

Writes benchmarks/results/reconcile.json and reconcile.png (needs matplotlib for the PNG).

    .venv/bin/python benchmarks/bench_reconcile.py [--latency-count 50] [--scale-count 500]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
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
sys.path.insert(0, str(ROOT / "operator"))  # works without the editable install too

from peakserve_harness.controlplane.cluster import DevCluster  # noqa: E402
from peakserve_harness.controlplane.nodes import GpuNode  # noqa: E402
from peakserve_harness.operator_process import OperatorProcess  # noqa: E402
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

    def __init__(self, label: str, total: int):
        self.label, self.total, self.started = label, total, time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        line = (f"{self.label:<16} [{bar}] {done:>4}/{self.total} {extra:<8} "
                f"{time.monotonic() - self.started:6.1f}s")
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
                     healthy: Callable[[], bool] = lambda: True) -> tuple[float | None, list[list[float]]]:
    """Poll count_ready() every `interval` s until it reaches total (and the writers are done).

    Returns (wall seconds from `started` to the first poll that saw all ready, or None on
    timeout) and the samples [[seconds, ready], ...].
    """
    progress = Progress(label, total)
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

    def count_ready() -> int:
        deps = kube.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments",
                          query=[("labelSelector", f"{MANAGED_BY}={BASELINE_MANAGER}")]).get("items", [])
        return sum(1 for d in deps if ((d.get("status") or {}).get("readyReplicas") or 0) >= 1)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="baseline")
    started = time.monotonic()
    futures = [pool.submit(apply_one, n) for n in names]
    try:
        wall, samples = wait_convergence("scale/baseline", count, count_ready, started, timeout, interval,
                                         creators_done=lambda: all(f.done() for f in futures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        log(f"baseline: {len(errors)} apply errors, first: {errors[0]}")
    return {"count": count, "threads": threads, "wall_s": wall, "converged": wall is not None,
            "apply_errors": len(errors), "first_errors": errors[:5], "poll_interval_s": interval,
            "applies_done_s": round(max(applied_at) - started, 3) if applied_at else None,
            "samples": samples, "per_second_ready": per_second(samples)}


def phase_operator(clients: Clients, operator: OperatorProcess, ns: str, count: int, threads: int,
                   timeout: float, interval: float) -> dict[str, Any]:
    kube = clients.get()
    create_namespace(kube, ns)
    path = MD_PATH.format(ns=ns)
    names = [f"md-{i:03d}" for i in range(count)]
    errors: list[str] = []
    created_at: list[float] = []

    def create_one(name: str) -> None:
        try:
            clients.get().create(path, md_body(name, ns))
            created_at.append(time.monotonic())
        except Exception as err:  # noqa: BLE001
            errors.append(f"{name}: {err}")

    def count_ready() -> int:
        items = kube.call("GET", path).get("items", [])
        return sum(1 for o in items if ready_condition(o) == "True")

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="creator")
    started = time.monotonic()
    futures = [pool.submit(create_one, n) for n in names]
    try:
        wall, samples = wait_convergence("scale/operator", count, count_ready, started, timeout, interval,
                                         creators_done=lambda: all(f.done() for f in futures),
                                         healthy=operator.alive)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        log(f"operator: {len(errors)} create errors, first: {errors[0]}")
    result: dict[str, Any] = {
        "count": count, "threads": threads, "wall_s": wall, "converged": wall is not None,
        "create_errors": len(errors), "first_errors": errors[:5], "poll_interval_s": interval,
        "creates_done_s": round(max(created_at) - started, 3) if created_at else None,
        "samples": samples, "per_second_ready": per_second(samples),
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-count", type=int, default=50)
    p.add_argument("--scale-count", type=int, default=500)
    p.add_argument("--threads", type=int, default=4, help="client threads for both scale phases")
    p.add_argument("--nodes", type=int, default=4, help="simulated A10 nodes (160 GPUs, 250 pods each)")
    p.add_argument("--drift-interval", type=float, default=300)  # the operator's own default
    p.add_argument("--latency-timeout", type=float, default=30, help="per create, seconds")
    p.add_argument("--scale-timeout", type=float, default=1200, help="per scale phase, seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    args = p.parse_args(argv)
    if min(args.latency_count, args.scale_count, args.threads, args.nodes) < 1:
        p.error("counts, threads and nodes must be >= 1")

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peakserve-bench-"))
    log(f"work dir {work}")
    nodes = tuple(GpuNode(f"bench-a10-{i}", "NVIDIA-A10", gpus=160, cpu="512", memory="4Ti", pods="250")
                  for i in range(args.nodes))
    need = args.latency_count + args.scale_count  # baseline and operator never run at the same time
    if need > 160 * args.nodes or need > 250 * args.nodes:
        p.error(f"{args.nodes} nodes cannot hold {need} single-GPU pods")
    cluster = DevCluster(work / "cluster", log=log)
    operator = OperatorProcess(cluster.kubeconfig, work / "operator.log", args.drift_interval)
    results: dict[str, Any] = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "spec": SPEC,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "nodes": [dataclasses.asdict(n) for n in nodes],
    }
    rc = 1
    try:
        t = time.monotonic()
        cluster.up(nodes=nodes, timeout=180)
        kubectl = str(ensure_tools(log)["kubectl"])
        for cmd in (["apply", "--server-side", "-f", str(ROOT / "crds")],
                    ["wait", "--for", "condition=established", "--timeout=60s",
                     "crd/modeldeployments.peakserve.io"]):
            subprocess.run([kubectl, f"--kubeconfig={cluster.kubeconfig}", *cmd], check=True,
                           capture_output=True, timeout=90)
        kube = Kube.from_kubeconfig(cluster.kubeconfig)
        clients = Clients(cluster.kubeconfig)
        results["versions"] = versions(kube)
        operator.start()
        results["operator"] = {"argv": operator.argv[1:], "pid": operator.proc.pid}
        results["setup_s"] = round(time.monotonic() - t, 1)
        log(f"control plane + CRD + operator ready in {results['setup_s']}s")
        cpu = {"start": proc_status(operator.proc.pid).get("cpu_s")}

        # 1. latency
        results["latency"] = phase_latency(kube, "bench-latency", args.latency_count, args.latency_timeout, 0.02)
        lat = results["latency"]
        log(f"latency p50 {lat['p50_s'] * 1000:.0f} ms, p90 {lat['p90_s'] * 1000:.0f} ms, "
            f"p99 {lat['p99_s'] * 1000:.0f} ms, max {lat['max_s'] * 1000:.0f} ms")
        cpu["after_latency"] = proc_status(operator.proc.pid).get("cpu_s")
        # Free the GPUs and quiet the operator before the scale phases, so both start from the same state.
        results["latency"]["namespace_delete_s"] = round(delete_namespace(kube, "bench-latency", 300), 1)
        results["latency"]["operator_settle_s"] = settle(operator.proc.pid)

        # 2. baseline
        scale: dict[str, Any] = {"count": args.scale_count, "threads": args.threads}
        results["scale"] = scale
        scale["baseline"] = phase_baseline(clients, "bench-baseline", args.scale_count, args.threads,
                                           args.scale_timeout, 0.5)
        cpu["after_baseline"] = proc_status(operator.proc.pid).get("cpu_s")
        log(f"baseline: {scale['baseline']['wall_s'] or float('nan'):.2f}s")
        scale["baseline"]["namespace_delete_s"] = round(delete_namespace(kube, "bench-baseline", 600), 1)
        scale["baseline"]["operator_settle_s"] = settle(operator.proc.pid)

        # 3. operator
        cpu["before_operator"] = proc_status(operator.proc.pid).get("cpu_s")
        metrics_before = operator.metrics()
        scale["operator"] = phase_operator(clients, operator, "bench-operator", args.scale_count, args.threads,
                                           args.scale_timeout, 0.5)
        cpu["after_operator"] = proc_status(operator.proc.pid).get("cpu_s")
        log(f"operator: {scale['operator']['wall_s'] or float('nan'):.2f}s")

        # 4. ratio, memory, operator counters
        if scale["baseline"]["wall_s"] and scale["operator"]["wall_s"]:
            scale["ratio"] = round(scale["operator"]["wall_s"] / scale["baseline"]["wall_s"], 3)
        mem = proc_status(operator.proc.pid)
        metrics_after = operator.metrics()
        results["operator"].update({
            "peak_rss_mib": mem.get("VmHWM"), "rss_mib_at_end": mem.get("VmRSS"),
            "cpu_s": cpu, "cpu_s_scale_phase": (round(cpu["after_operator"] - cpu["before_operator"], 2)
                                                if None not in (cpu["after_operator"], cpu["before_operator"])
                                                else None),
            "metrics_scale_phase": {k: round(v - metrics_before.get(k, 0.0), 3) for k, v in metrics_after.items()
                                    if "_total" in k or "_sum" in k or "_count" in k},
            "metrics_at_end": metrics_after,
        })
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if scale["baseline"]["converged"] and scale["operator"]["converged"]:
            rc = 0
        else:
            log("a scale phase did not converge; operator log tail:\n" + operator.tail())
    except BaseException as err:
        results["error"] = f"{type(err).__name__}: {err}"
        log(f"FAILED: {results['error']}\n--- operator log tail ({operator.log_path}) ---\n{operator.tail()}")
        if isinstance(err, KeyboardInterrupt):
            rc = 130
    finally:
        if operator.proc is not None and operator.alive():
            mem = proc_status(operator.proc.pid)
            results.setdefault("operator", {}).setdefault("peak_rss_mib", mem.get("VmHWM"))
        operator.stop()
        cluster.down(quiet=True)
        results["operator_log_lines"] = (len(operator.log_path.read_text(errors="replace").splitlines())
                                         if operator.log_path.exists() else 0)
        json_path = args.out / "reconcile.json"
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
        if "latency" in results and "scale" in results and "operator" in results["scale"]:
            problem = plot(results, args.out / "reconcile.png")
            log(problem or f"wrote {args.out / 'reconcile.png'}")
        if args.keep or rc != 0:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if rc == 0:
        s = results["scale"]
        print(json.dumps({"latency_p50_s": round(results["latency"]["p50_s"], 4),
                          "latency_p90_s": round(results["latency"]["p90_s"], 4),
                          "latency_p99_s": round(results["latency"]["p99_s"], 4),
                          "latency_max_s": round(results["latency"]["max_s"], 4),
                          "baseline_wall_s": s["baseline"]["wall_s"], "operator_wall_s": s["operator"]["wall_s"],
                          "ratio": s.get("ratio"), "operator_peak_rss_mib": results["operator"]["peak_rss_mib"]},
                         indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
