"""Endpoints of a load run: URL parsing, and round-robin with skipping.

An endpoint is ``host:port`` (gRPC, or the run's default protocol), ``grpc://host:port`` or
``http://host:port``. Each gets one asyncio client from :mod:`.client` (tritonclient's
``grpc.aio``: one HTTP/2 channel; or ``http.aio``: a connection pool), never through a proxy from
the environment.

:class:`EndpointPool` hands out the live endpoints round-robin. An endpoint that fails
``skip_after`` times in a row leaves the rotation for ``skip_seconds``; then one probe request
goes to it, and it comes back on the first success. When the endpoints are given as a callable
the pool re-reads it (:meth:`EndpointPool.refresh`): new ones join, missing ones stop getting
requests, and the stats keep every endpoint that was used.
"""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable, Iterable, Sequence, Union

from . import client as client_module
from .client import Client, Target, parse_endpoint

EndpointSource = Union[Sequence[str], Callable[[], Union[Iterable[str], Awaitable[Iterable[str]]]]]


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
                client = client_module.open_client(target.protocol, target.address,
                                                   connections=self._connections,
                                                   timeout_s=self._timeout_s)
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
