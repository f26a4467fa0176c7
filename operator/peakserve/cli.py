"""The `peakserve` command: run, render, crd, crds, docs; and, with their extras, build, bench, plan and analyze.

Each command imports what it needs when it runs, so the operator image (peakserve without extras) starts
without torch, numpy or tritonclient.
"""

from __future__ import annotations

import argparse
import socket
import sys
import uuid
from pathlib import Path

from .extras import MissingExtra, require


def _render(args: argparse.Namespace) -> int:
    import yaml

    from .api.validation import InvalidSpec, parse_spec
    from .render import render_all
    from .render.owner import Owner
    from .yamlio import dump_all

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    documents = [d for d in yaml.safe_load_all(text) if d]
    out = []
    for body in documents:
        body.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        body["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec as err:
            print(f"{body['metadata'].get('name', '?')}: invalid spec: {err}", file=sys.stderr)
            return 1
        out.extend(render_all(Owner.of(body), spec))
    sys.stdout.write(dump_all(out))
    return 0


def _crd(args: argparse.Namespace) -> int:
    from .api.crd import render_crd_yaml

    text = render_crd_yaml()
    if args.write:
        Path(args.write).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .api.reference import update_readme

    changed = update_readme(Path(args.readme))
    print(f"{args.readme}: CRD reference {'updated' if changed else 'already current'}")
    return 0


def _crds(args: argparse.Namespace) -> int:
    from .cluster.client import Kube
    from .cluster.crds import apply_crds

    print(apply_crds(Kube.from_kubeconfig(args.kubeconfig)))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runtime.handlers import Election, run_operator

    election = None
    if args.leader_elect:
        election = Election(namespace=args.leader_election_namespace or _own_namespace(),
                            name=args.leader_election_id,
                            identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    return run_operator(namespaces=args.namespace, health_address=args.health_address,
                        metrics_address=args.metrics_address, drift_interval=args.drift_interval,
                        election=election)


def _own_namespace() -> str:
    """The pod's namespace, as its ServiceAccount token's mount says; "default" outside a cluster."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else "default"


def parser() -> argparse.ArgumentParser:
    from .analysis.cli import add_parser as add_analyze_parser
    from .builder.cli import add_parser as add_build_parser
    from .loadgen.cli import add_parser as add_bench_parser
    from .planner.cli import add_parser as add_plan_parser

    top = argparse.ArgumentParser(prog="peakserve", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the operator against the current kubeconfig (in-cluster config first)")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default all namespaces")
    p.add_argument("--health-address", default="0.0.0.0:8080", help="liveness endpoint host:port")
    p.add_argument("--metrics-address", default="0.0.0.0:9090", help="Prometheus metrics host:port")
    p.add_argument("--drift-interval", type=float, default=300.0,
                   help="seconds between drift checks of each ModelDeployment (they re-apply desired state)")
    p.add_argument("--leader-elect", action="store_true",
                   help="HA: only the replica holding a coordination.k8s.io Lease acts; the others stand by")
    p.add_argument("--leader-election-id", default="peakserve", help="name of the Lease (with --leader-elect)")
    p.add_argument("--leader-election-namespace", default=None,
                   help="namespace of the Lease; default the pod's own namespace")
    p.set_defaults(func=_run)

    p = sub.add_parser("render", help="print the children of a ModelDeployment as YAML, without a cluster")
    p.add_argument("-f", "--file", required=True, help="ModelDeployment YAML, or - for stdin")
    p.add_argument("-n", "--namespace", default="default")
    p.set_defaults(func=_render)

    p = sub.add_parser("crd", help="print the CRD generated from the spec models")
    p.add_argument("--write", metavar="PATH", help="write to PATH instead of stdout")
    p.set_defaults(func=_crd)

    p = sub.add_parser("crds", help="manage the CRD in a cluster (Helm never upgrades crds/)")
    p.add_argument("action", choices=["apply"], help="apply: server-side apply this version's CRD")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster, then $KUBECONFIG")
    p.set_defaults(func=_crds)

    p = sub.add_parser("docs", help="regenerate the CRD reference section of the README")
    p.add_argument("--readme", default="README.md")
    p.set_defaults(func=_docs)

    # These need an extra; their parsers are light, their commands import the extra when run.
    add_build_parser(sub).set_defaults(extra="build")
    add_bench_parser(sub).set_defaults(extra="client")
    add_plan_parser(sub).set_defaults(extra="plan")
    add_analyze_parser(sub).set_defaults(extra="client")  # tritonclient + numpy; the builder image has it
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    extra = getattr(args, "extra", None)
    try:
        if extra:
            require(args.command, extra)
        return args.func(args)
    except MissingExtra as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
