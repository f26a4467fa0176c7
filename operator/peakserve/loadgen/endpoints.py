"""Endpoints of a load run: URL parsing, asyncio Triton clients, and round-robin with skipping.

An endpoint is ``host:port`` (gRPC, or the run's default protocol), ``grpc://host:port`` or
``http://host:port``. Each gets one asyncio client (tritonclient's ``grpc.aio``: one HTTP/2
channel; or ``http.aio``: a connection pool), never through a proxy from the environment.

:class:`EndpointPool` hands out the live endpoints round-robin. An endpoint that fails
``skip_after`` times in a row leaves the rotation for ``skip_seconds``; then one probe request
goes to it, and it comes back on the first success. When the endpoints are given as a callable
the pool re-reads it (:meth:`EndpointPool.refresh`): new ones join, missing ones stop getting
requests, and the stats keep every endpoint that was used.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

PROTOCOLS = ("grpc", "http")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
MAX_GRPC_MESSAGE = 2**31 - 1

EndpointSource = Union[Sequence[str], Callable[[], Union[Iterable[str], Awaitable[Iterable[str]]]]]


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
    """One endpoint's asyncio Triton client, protocol-neutral."""

    protocol = ""

    def prepare(self, arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> Any:
        raise NotImplementedError

    async def infer(self, model: str, payload: Any, version: str, timeout_s: float) -> None:
        raise NotImplementedError

    async def model_config(self, model: str, version: str = "") -> dict:
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

    async def infer(self, model, payload, version, timeout_s):
        await self._client.infer(model, payload, model_version=version, client_timeout=timeout_s)

    async def model_config(self, model, version=""):
        return await self._client.get_model_config(model, version, as_json=True,
                                                   client_timeout=self._timeout_s)

    async def close(self):
        await self._client.close()


class HttpClient(Client):
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

    async def infer(self, model, payload, version, timeout_s):
        await self._client.infer(model, payload, model_version=version)

    async def model_config(self, model, version=""):
        return await self._client.get_model_config(model, version)

    async def close(self):
        await self._client.close()


def open_client(protocol: str, address: str, *, connections: int, timeout_s: float) -> Client:
    """A client for ``address``; call it inside the running event loop (grpc.aio needs one)."""
    if protocol == "grpc":
        return GrpcClient(address, timeout_s)
    if protocol == "http":
        return HttpClient(address, connections, timeout_s)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


# ---------------------------------------------------------------------------------------- the pool

class Endpoint:
    """An endpoint's client and health: consecutive failures, when it may be tried again."""

    def __init__(self, target: Target, client: Client):
        self.target = target
        self.client = client
        self.present = True          # in the latest endpoint list
        self.consecutive_failures = 0
        self.skip_until = 0.0        # out of the rotation until then
        self.skips = 0               # times taken out of the rotation
        self.skipping = False        # out of it now (or probing) after consecutive failures
        self.inflight = 0

    @property
    def url(self) -> str:
        return self.target.url

    def available(self, now: float) -> bool:
        return self.present and now >= self.skip_until


class EndpointPool:
    """Round-robin over the live endpoints, skipping those that keep failing."""

    def __init__(self, source: EndpointSource, *, default_protocol: str = "grpc",
                 skip_after: int = 3, skip_seconds: float = 2.0, connections: int = 100,
                 timeout_s: float = 10.0):
        self._source = source
        self._protocol = default_protocol
        self.skip_after = skip_after
        self.skip_seconds = skip_seconds
        self._connections = connections
        self._timeout_s = timeout_s
        self.endpoints: dict[str, Endpoint] = {}   # every endpoint ever used, in order
        self._order: list[Endpoint] = []           # the present ones
        self._cursor = 0
        self.refresh_errors = 0
        self.last_refresh_error: str | None = None

    @property
    def dynamic(self) -> bool:
        return callable(self._source)

    async def refresh(self) -> None:
        """Read the endpoint list (once for a list; each call for a callable)."""
        if callable(self._source):
            try:
                got = self._source()
                if inspect.isawaitable(got):
                    got = await got
                urls = list(got)
            except Exception as err:  # noqa: BLE001 - keep the last list; the run goes on
                self.refresh_errors += 1
                self.last_refresh_error = f"{type(err).__name__}: {err}"
                return
        else:
            urls = list(self._source)
        self.update(urls)

    def update(self, urls: Iterable[str]) -> None:
        wanted: list[Target] = []
        seen = set()
        for url in urls:
            if url in seen:
                continue
            seen.add(url)
            wanted.append(parse_endpoint(url, self._protocol))
        for e in self.endpoints.values():
            e.present = e.url in seen
        order = []
        for target in wanted:
            e = self.endpoints.get(target.url)
            if e is None:
                client = open_client(target.protocol, target.address,
                                     connections=self._connections, timeout_s=self._timeout_s)
                e = self.endpoints[target.url] = Endpoint(target, client)
            order.append(e)
        self._order = order
        if self._order:
            self._cursor %= len(self._order)

    def live(self, now: float) -> list[Endpoint]:
        return [e for e in self._order if e.available(now)]

    @property
    def present(self) -> list[Endpoint]:
        return list(self._order)

    def pick(self, now: float) -> Endpoint | None:
        """The next available endpoint after the last one picked; None when none is."""
        n = len(self._order)
        for j in range(n):
            e = self._order[(self._cursor + j) % n]
            if e.available(now):
                self._cursor = (self._cursor + j + 1) % n
                if self.skip_after and e.consecutive_failures >= self.skip_after:
                    e.skip_until = now + self.skip_seconds  # a probe: one request until it answers
                return e
        return None

    def next_available(self, now: float) -> float | None:
        """When the earliest present endpoint comes back into the rotation (None: none present)."""
        return min((max(now, e.skip_until) for e in self._order), default=None)

    def succeeded(self, e: Endpoint) -> None:
        e.consecutive_failures = 0
        e.skip_until = 0.0
        e.skipping = False

    def failed(self, e: Endpoint, now: float) -> None:
        e.consecutive_failures += 1
        if self.skip_after and e.consecutive_failures >= self.skip_after:
            if not e.skipping:
                e.skipping = True
                e.skips += 1
            e.skip_until = max(e.skip_until, now + self.skip_seconds)

    async def close(self) -> None:
        for e in self.endpoints.values():
            try:
                await e.client.close()
            except Exception:  # noqa: BLE001 - closing a client of a dead server
                pass
