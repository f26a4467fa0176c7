"""peakserve's Triton client: asyncio clients for gRPC and HTTP, and a small synchronous facade.

:func:`open_client` gives one endpoint's :class:`Client` (tritonclient's ``grpc.aio``: one HTTP/2
channel; or ``http.aio``: an aiohttp connection pool). ``peakserve bench`` opens one per endpoint
(:class:`~peakserve.loadgen.endpoints.EndpointPool`); the synchronous functions :func:`infer`,
:func:`model_ready`, :func:`model_config` and :func:`model_stats` open the same clients for one
call, inside one short asyncio loop, so that tests, the demo and the benchmarks take the same path.

Both protocols answer alike: :meth:`Client.model_config` and :meth:`Client.model_stats` return what
Triton's HTTP API returns (the bare config; a model's statistics entry), and over gRPC the protobuf
is turned into that JSON (proto field names, fields left at their default included, 64-bit
integers as numbers rather than proto3 JSON's strings).

Never through a proxy from the environment: gRPC channels get ``grpc.enable_http_proxy 0``, and
tritonclient.http.aio's aiohttp session leaves ``trust_env`` at False, so it ignores
``HTTP_PROXY``/``http_proxy`` and connects directly, loopback included.

Needs the ``client`` extra (tritonclient[grpc,http], numpy).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import numpy as np

PROTOCOLS = ("grpc", "http")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
MAX_GRPC_MESSAGE = 2**31 - 1
T = TypeVar("T")


# ---------------------------------------------------------------------------------------- addresses

@dataclass(frozen=True)
class Target:
    url: str        # as given: the key of the per-endpoint stats
    protocol: str   # "grpc" | "http"
    address: str    # host:port, as tritonclient takes it


def parse_endpoint(url: str, default_protocol: str = "grpc") -> Target:
    """``host:port`` -> the default protocol; ``grpc://`` / ``http://`` choose it."""
    if default_protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {default_protocol!r}")
    url = url.strip()
    m = _SCHEME.match(url)
    protocol = default_protocol
    address = url
    if m:
        scheme = m.group(1).lower()
        if scheme not in PROTOCOLS:
            raise ValueError(f"endpoint {url!r}: scheme {scheme}:// not supported "
                             "(use host:port, grpc://host:port or http://host:port)")
        protocol, address = scheme, url[m.end():]
    address = address.rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in address:
        raise ValueError(f"endpoint {url!r}: expected host:port")
    return Target(url, protocol, address)


# ---------------------------------------------------------------------------------------- errors

def error_kind(err: BaseException) -> str:
    """A short, stable name for a failed request: the gRPC status ("UNAVAILABLE"), "HTTP 400",
    "timeout", "connection", or the exception's type."""
    from tritonclient.utils import InferenceServerException

    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(err, InferenceServerException):
        status = str(err.status() or "")
        if status.startswith("StatusCode."):
            name = status.removeprefix("StatusCode.")
            return "timeout" if name == "DEADLINE_EXCEEDED" else name
        if status.isdigit():
            return f"HTTP {status}"
        return "server_error"
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - the http extra is installed with tritonclient[http]
        aiohttp = None
    if aiohttp is not None and isinstance(err, aiohttp.ClientConnectionError):
        return "connection"
    if isinstance(err, (ConnectionError, OSError)):
        return "connection"
    return type(err).__name__


# ---------------------------------------------------------------------------------------- clients

class Client:
    """One endpoint's asyncio Triton client, protocol-neutral.

    ``infer`` returns tritonclient's result (``result.as_numpy(name)``); ``model_config`` the
    config as JSON; ``model_stats`` the statistics entry of the model (its first version when
    ``version`` is not given); ``model_ready`` whether the server says the model is ready.
    """

    protocol = ""

    def prepare(self, arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> Any:
        """The request inputs for ``arrays`` (name -> array); ``datatypes`` overrides the Triton
        type a name would get from its numpy dtype."""
        raise NotImplementedError

    async def infer(self, model: str, payload: Any, version: str, timeout_s: float,
                    outputs: Sequence[str] | None = None) -> Any:
        raise NotImplementedError

    async def model_ready(self, model: str, version: str = "") -> bool:
        raise NotImplementedError

    async def model_config(self, model: str, version: str = "") -> dict:
        raise NotImplementedError

    async def model_stats(self, model: str, version: str = "") -> dict:
        stats = (await self._statistics(model, version)).get("model_stats") or []
        if not stats:
            raise LookupError(f"no statistics for model {model!r}")
        return stats[0]

    async def _statistics(self, model: str, version: str) -> dict:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _datatype(name: str, array: np.ndarray, datatypes: Mapping[str, str]) -> str:
    if name in datatypes:
        return datatypes[name]
    from tritonclient.utils import np_to_triton_dtype

    dtype = np_to_triton_dtype(array.dtype)
    if dtype is None:
        raise TypeError(f"input {name!r}: no Triton data type for numpy {array.dtype}")
    return dtype


def _as_json(message) -> dict:
    """A protobuf response as Triton's HTTP API writes the same thing."""
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    return _numbers(message.DESCRIPTOR, data)


def _numbers(descriptor, data: dict) -> dict:
    for field in descriptor.fields:
        if field.name in data:
            data[field.name] = _field_value(field, data[field.name])
    return data


def _field_value(field, value):
    from google.protobuf.descriptor import FieldDescriptor as F

    if isinstance(value, list):
        return [_field_value(field, v) for v in value]
    if field.message_type is not None and isinstance(value, dict):
        if field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            return {k: _field_value(entry, v) for k, v in value.items()}
        return _numbers(field.message_type, value)
    if field.type in (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64,
                      F.TYPE_SFIXED64):
        return int(value)
    return value


class GrpcClient(Client):
    protocol = "grpc"

    def __init__(self, address: str, timeout_s: float):
        import tritonclient.grpc.aio as grpcaio

        self._client = grpcaio.InferenceServerClient(address, channel_args=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
        ])
        self._timeout_s = timeout_s

    def prepare(self, arrays, datatypes):
        from tritonclient.grpc import InferInput

        return [InferInput(n, list(a.shape), _datatype(n, a, datatypes)).set_data_from_numpy(a)
                for n, a in arrays.items()]

    async def infer(self, model, payload, version, timeout_s, outputs=None):
        from tritonclient.grpc import InferRequestedOutput

        requested = None if outputs is None else [InferRequestedOutput(n) for n in outputs]
        return await self._client.infer(model, payload, model_version=version, outputs=requested,
                                        client_timeout=timeout_s)

    async def model_ready(self, model, version=""):
        return await self._client.is_model_ready(model, version, client_timeout=self._timeout_s)

    async def model_config(self, model, version=""):
        response = await self._client.get_model_config(model, version,
                                                       client_timeout=self._timeout_s)
        return _as_json(response.config)

    async def _statistics(self, model, version):
        return _as_json(await self._client.get_inference_statistics(
            model, version, client_timeout=self._timeout_s))

    async def close(self):
        await self._client.close()


class HttpClient(Client):
    """Over tritonclient.http.aio; ``timeout_s`` bounds each call (aiohttp's total timeout)."""

    protocol = "http"

    def __init__(self, address: str, connections: int, timeout_s: float):
        import tritonclient.http.aio as httpaio

        self._client = httpaio.InferenceServerClient(address, conn_limit=max(1, connections),
                                                     conn_timeout=timeout_s)

    def prepare(self, arrays, datatypes):
        from tritonclient.http import InferInput

        inputs = []
        for n, a in arrays.items():
            t = InferInput(n, list(a.shape), _datatype(n, a, datatypes))
            t.set_data_from_numpy(a, binary_data=True)
            inputs.append(t)
        return inputs

    async def infer(self, model, payload, version, timeout_s, outputs=None):
        from tritonclient.http import InferRequestedOutput

        requested = (None if outputs is None
                     else [InferRequestedOutput(n, binary_data=True) for n in outputs])
        return await self._client.infer(model, payload, model_version=version, outputs=requested)

    async def model_ready(self, model, version=""):
        return await self._client.is_model_ready(model, version)

    async def model_config(self, model, version=""):
        return await self._client.get_model_config(model, version)

    async def _statistics(self, model, version):
        return await self._client.get_inference_statistics(model, version)

    async def close(self):
        await self._client.close()


def open_client(protocol: str, address: str, *, connections: int, timeout_s: float) -> Client:
    """A client for ``address`` (host:port); call it inside the running event loop (grpc.aio and
    aiohttp need one)."""
    if protocol == "grpc":
        return GrpcClient(address, timeout_s)
    if protocol == "http":
        return HttpClient(address, connections, timeout_s)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


# ---------------------------------------------------------------------------------------- sync

def _once(url: str, protocol: str, timeout_s: float,
          call: Callable[[Client], Awaitable[T]]) -> T:
    """``call`` on a client of ``url``, in one asyncio loop of its own; the client is closed after.

    ``url``: ``host:port`` (``protocol``), ``grpc://host:port`` or ``http://host:port``, as
    ``peakserve bench --url`` takes it. Not from inside a running event loop: use a Client there.
    """
    target = parse_endpoint(url, protocol)

    async def run() -> T:
        client = open_client(target.protocol, target.address, connections=1, timeout_s=timeout_s)
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(run())


def infer(url: str, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *,
          protocol: str = "grpc", version: str = "", timeout_s: float = 30.0,
          datatypes: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """One inference; the ``outputs`` asked for, by name, as numpy arrays."""
    arrays = {n: np.ascontiguousarray(a) for n, a in inputs.items()}

    async def call(client: Client) -> dict[str, np.ndarray]:
        result = await client.infer(model, client.prepare(arrays, datatypes or {}), version,
                                    timeout_s, outputs)
        return {n: result.as_numpy(n) for n in outputs}

    return _once(url, protocol, timeout_s, call)


def model_ready(url: str, model: str, *, protocol: str = "grpc", version: str = "",
                timeout_s: float = 5.0) -> bool:
    """Whether the server says ``model`` (``version``) is ready; raises when it does not answer."""
    return _once(url, protocol, timeout_s, lambda c: c.model_ready(model, version))


def model_config(url: str, model: str, *, protocol: str = "grpc", version: str = "",
                 timeout_s: float = 5.0) -> dict:
    """The configuration the server loaded for ``model``, as JSON (as the HTTP API gives it)."""
    return _once(url, protocol, timeout_s, lambda c: c.model_config(model, version))


def model_stats(url: str, model: str, *, protocol: str = "grpc", version: str = "",
                timeout_s: float = 5.0) -> dict:
    """The model's statistics entry for ``version`` (the first one when not given).

    Triton counts the configured model_warmup requests here too (``inference_stats.success``).
    """
    return _once(url, protocol, timeout_s, lambda c: c.model_stats(model, version))
