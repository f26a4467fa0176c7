"""`peakserve-dev up|down|status|env|builds`: the local control plane with simulated GPU nodes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .controlplane.cluster import DevCluster
from .controlplane.tools import ensure_tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peakserve-dev", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "env", "builds"],
                        help="builds: run build Jobs' pods on this host (KWOK runs no containers)")
    parser.add_argument("--dir", default=None, help="state directory (default ~/.cache/peakserve/dev)")
    args = parser.parse_args(argv)
    cluster = DevCluster(Path(args.dir) if args.dir else None,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.action == "up":
        cluster.up()
    elif args.action == "down":
        cluster.down()
    elif args.action == "status":
        print(f"running at {cluster.server}" if cluster.running() else "not running")
        return 0 if cluster.running() else 1
    elif args.action == "env":
        tools = ensure_tools(lambda m: print(m, file=sys.stderr))
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={tools['kubectl'].parent}:$PATH")
    elif args.action == "builds":
        return _run_builds(cluster)
    return 0


def _run_builds(cluster: DevCluster) -> int:
    """Foreground local build executor (make demo runs it in the background)."""
    import logging
    import threading

    from peakserve.cluster.client import Kube
    from .pods.builder_pods import run_builds

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    try:
        run_builds(Kube.from_kubeconfig(cluster.kubeconfig), stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
