"""Check built images by running them from their unpacked archives (see :mod:`.sandbox`).

- operator: ``/opt/venv/bin/peakserve --help`` and ``import peakserve.runtime.handlers`` as the
  image's user (65532) on a read-only root: what the chart's restricted pod would run into first.
- triton: the Triton Deployment's container as the operator renders it (command, args, ports,
  probe paths, pod uid/gid) against a model repository laid out as the pod's volumes lay it out
  (``/models/NAME/config.pbtxt`` from the rendered ConfigMap, ``/models/NAME/VERSION/model.onnx``),
  probed on loopback until the startup probe's path answers 200, then an inference request.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import sandbox
from .oci_archive import unpack

OPERATOR_USER = (65532, 65532)
TRITON_SPEC = {
    "model": {"name": "mlp", "version": 1, "uri": "/srv/models/mlp/1", "format": "onnx", "maxBatchSize": 8,
              "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
              "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
    "serving": {"gpus": 0, "instanceGroups": [{"kind": "CPU", "count": 1}]},
}


def _user(config: dict) -> tuple[int, int]:
    user, _, group = config["config"].get("User", "0").partition(":")
    return int(user), int(group or user)


READ_ONLY_CHECK = """
import errno, tempfile
try:
    open("/opt/venv/probe", "w")
except OSError as e:
    assert e.errno in (errno.EROFS, errno.EACCES), e
else:
    raise SystemExit("the root filesystem is writable")
tempfile.NamedTemporaryFile(dir="/tmp").close()
"""


def verify_operator(archive: Path, timeout: float = 120) -> dict:
    with tempfile.TemporaryDirectory(prefix="peakserve-verify-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        config = unpack(archive, rootfs)
        c = config["config"]
        checks = {"user": c.get("User"), "entrypoint": c.get("Entrypoint"), "cmd": c.get("Cmd")}
        if _user(config) != OPERATOR_USER:
            raise AssertionError(f"operator image user is {c.get('User')}, not 65532:65532")
        for label, argv in (("help", ["/opt/venv/bin/peakserve", "--help"]),
                            ("import", ["python", "-c", "import peakserve.runtime.handlers"]),
                            # the root really is read-only and /tmp (the chart's emptyDir) is not
                            ("read_only_root", ["python", "-c", READ_ONLY_CHECK])):
            spec = sandbox.Spec(rootfs, argv, *OPERATOR_USER, env=c.get("Env", []),
                                workdir=c.get("WorkingDir", "/"))
            t0 = time.monotonic()
            proc = sandbox.run(spec, timeout=timeout)
            if proc.returncode != 0:
                raise AssertionError(f"{' '.join(argv)} as 65532 on a read-only root exited "
                                     f"{proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            checks[label] = {"rc": 0, "seconds": round(time.monotonic() - t0, 2),
                             "first_line": (proc.stdout.strip().splitlines() or [""])[0]}
        return checks


def _tiny_onnx(path: Path, features: int) -> None:
    """dense FP32[b, features] -> score FP32[b, 1]: one MatMul and an Add, fixed weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array((np.arange(features, dtype=np.float32) / features).reshape(features, 1), "w")
    b = numpy_helper.from_array(np.array([0.5], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["dense", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["score"])],
        "tiny", [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["b", features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b", 1])], initializer=[w, b])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def rendered_triton():
    """(container, pod securityContext, config.pbtxt, spec) as the operator renders them."""
    from peakserve.api.validation import parse_spec
    from peakserve.render.deployment import render_deployment
    from peakserve.render.owner import Owner
    from peakserve.render.triton_config import config_hash, render_config_pbtxt

    spec = parse_spec(TRITON_SPEC)
    config = render_config_pbtxt(spec)
    deployment = render_deployment(Owner("verify", "default", "0"), spec, config_hash(config))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "triton"]
    return container, pod["securityContext"], config, spec


PROBE = r'''
import json, sys, time, urllib.request
http, metrics, startup, ready, live, model, features, deadline = json.loads(sys.argv[1])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(port, path):
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read()
    except Exception as e:
        return getattr(e, "code", None), str(e).encode()
t0 = time.monotonic()
while time.monotonic() - t0 < deadline:
    if get(http, startup)[0] == 200:
        break
    time.sleep(0.25)
out = {"ready_s": round(time.monotonic() - t0, 2), "startup": get(http, startup)[0],
       "ready": get(http, ready)[0], "live": get(http, live)[0]}
body = json.dumps({"inputs": [{"name": "dense", "shape": [2, features], "datatype": "FP32",
                               "data": [1.0] * features + [0.0] * features}]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/models/{model}/infer", data=body,
                             headers={"Content-Type": "application/json"})
try:
    with opener.open(req, timeout=10) as r:
        out["infer"] = json.loads(r.read())["outputs"][0]["data"]
except Exception as e:
    out["infer_error"] = str(e)
code, text = get(metrics, "/metrics")
out["metrics"] = code
out["metrics_has_success"] = b"nv_inference_request_success" in text
print(json.dumps(out))
sys.exit(0 if out["startup"] == 200 and "infer" in out else 1)
'''


def verify_triton(archive: Path, timeout: float = 180, ready_within: float = 120) -> dict:
    container, pod_security, config_text, spec = rendered_triton()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    features = spec.model.inputs[0].dims[0]
    tmp = Path(tempfile.mkdtemp(prefix="peakserve-verify-"))
    try:
        rootfs = tmp / "rootfs"
        config = unpack(archive, rootfs)
        c = config["config"]
        models = tmp / "models"
        model_dir = models / spec.model.name
        (model_dir / str(spec.model.version)).mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(config_text)
        _tiny_onnx(model_dir / str(spec.model.version) / "model.onnx", features)
        argv = [*container["command"], *container["args"]]
        uid, gid = pod_security["runAsUser"], pod_security["runAsGroup"]
        spec_ = sandbox.Spec(rootfs, argv, uid, gid, env=c.get("Env", []), workdir=c.get("WorkingDir", "/"),
                             binds={"/models": (models, True)},
                             read_only=container["securityContext"]["readOnlyRootFilesystem"])
        probe = json.dumps([ports["http"], ports["metrics"], container["startupProbe"]["httpGet"]["path"],
                            container["readinessProbe"]["httpGet"]["path"],
                            container["livenessProbe"]["httpGet"]["path"], spec.model.name, features,
                            ready_within])
        log = tmp / "tritonserver.log"
        proc = sandbox.run(spec_, timeout=timeout, then=[sys.executable, "-c", PROBE, probe], log=log)
        server_log = log.read_text(errors="replace") if log.exists() else ""
        if proc.returncode != 0:
            raise AssertionError(f"the Triton container did not serve (rc {proc.returncode}): "
                                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\ntritonserver log tail:\n"
                                 f"{server_log[-5000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update({"command": container["command"], "args": container["args"],
                       "ports": ports, "user": f"{uid}:{gid}"})
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
