"""`peakserve-dev up|down|status|env|builds|pods`: the local control plane with simulated GPU nodes.

- ``up [--gateway-api] [--real-node]``: start it (and install the Gateway API CRDs, standard channel; and
  start one real worker node beside the KWOK nodes: kubelet + containerd + runc, as root);
- ``builds`` (alias ``jobs``): the local job runner: runs model-build and rollout-analysis Jobs' pods
  on this host (KWOK runs no containers);
- ``pods``: the pod agent of the probed nodes: a real tritonserver on each Triton pod's loopback IP,
  and the pod's readiness from it. It writes the Prometheus targets to the file the dev metrics stack
  (``python -m peakserve_harness.metrics.stack``) scrapes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .controlplane.cluster import DevCluster
from .controlplane.tools import ensure_tools

ACTIONS = ["up", "down", "status", "env", "builds", "jobs", "pods"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peakserve-dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--dir", default=None, help="state directory (default ~/.cache/peakserve/dev)")
    parser.add_argument("--gateway-api", action="store_true",
                        help="up: also install the Gateway API CRDs (standard channel) from their Go module")
    parser.add_argument("--real-node", action="store_true",
                        help="up: also start one real worker node (kubelet + containerd + runc; needs root)")
    parser.add_argument("--namespace", default=None, help="pods, builds: only this namespace (default: all)")
    parser.add_argument("--targets-file", type=Path, default=None,
                        help="pods: Prometheus file_sd targets to write (default: the dev metrics stack's, "
                             "STATE/metrics/prometheus/targets.json)")
    args = parser.parse_args(argv)
    cluster = DevCluster(Path(args.dir) if args.dir else None,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.action == "up":
        cluster.up()
        if args.gateway_api:
            from peakserve.cluster.client import Kube
            from .controlplane.gateway_api import install_gateway_api

            install_gateway_api(Kube.from_kubeconfig(cluster.kubeconfig), log=cluster.log)
        if args.real_node:
            from .realnode.node import RealNode

            RealNode(cluster).start()
    elif args.action == "down":
        cluster.down()
    elif args.action == "status":
        print(f"running at {cluster.server}" if cluster.running() else "not running")
        return 0 if cluster.running() else 1
    elif args.action == "env":
        tools = ensure_tools(lambda m: print(m, file=sys.stderr))
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={tools['kubectl'].parent}:$PATH")
    elif args.action in ("builds", "jobs"):
        return _run_jobs(cluster, args.namespace)
    elif args.action == "pods":
        return _run_pods(cluster, args.namespace, args.targets_file)
    return 0


def _block_signals() -> None:
    """Block SIGINT/SIGTERM before starting threads (they inherit the mask): only sigwait takes them,
    so `peakserve-dev down` (SIGTERM) lets the command stop what it started."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _until_signalled() -> None:
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


def _run_jobs(cluster: DevCluster, namespace: str | None) -> int:
    """Foreground local job runner (make demo runs it in the background)."""
    from peakserve.cluster.client import Kube
    from .pods.job_pods import run_job_pods

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _block_signals()
    stop = threading.Event()
    runner = threading.Thread(target=run_job_pods, args=(Kube.from_kubeconfig(cluster.kubeconfig), stop),
                              kwargs={"namespace": namespace}, name="job-runner", daemon=True)
    runner.start()
    _until_signalled()
    stop.set()
    runner.join(timeout=5)
    return 0


def _run_pods(cluster: DevCluster, namespace: str | None, targets_file: Path | None) -> int:
    """Foreground pod agent for the probed nodes; on SIGINT/SIGTERM it stops every tritonserver."""
    from peakserve.cluster.client import Kube
    from .metrics.prometheus import PrometheusProcess
    from .pods.probed_pods import ProbedPods

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    targets = PrometheusProcess(targets_file.parent if targets_file else cluster.dir / "metrics" / "prometheus")
    if targets_file:
        targets.targets_file = targets_file
    _block_signals()
    agent = ProbedPods(Kube.from_kubeconfig(cluster.kubeconfig), cluster.dir / "pods", namespace=namespace,
                       on_targets=targets.set_targets)
    with agent:
        cluster.log(f"[pods] pod agent running for {namespace or 'all namespaces'}; Prometheus targets in "
                    f"{targets.targets_file}")
        _until_signalled()
    return 0


if __name__ == "__main__":
    sys.exit(main())
