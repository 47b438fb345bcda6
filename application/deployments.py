"""Commands and queries about a tenant's deployments: load the stream, decide, append; and the routing table.

The gateway reads the routing table on every request, so it is cached per tenant for `cache_ttl_s`
(default 1 s) with credentials already opened. A configure or remove through this process drops the
tenant's entry at once; another process sees the change within the TTL. A table past half its TTL is
read again in the background (`due_for_refresh`, `refresh`), so a busy tenant's requests never wait
for that read; the TTL counts from the start of a read, which keeps the bound.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from application.ports import Ledger
from domain import deployments as dep
from domain.deployments import Deployment
from domain.identity import UnknownTenant, tenant_stream
from domain.ledger import NewEvent, Receipt
from domain.pricing import Price

log = logging.getLogger(__name__)


class CredentialSealer(abc.ABC):
    """Seals a provider credential for one deployment, and opens it again."""

    @abc.abstractmethod
    def seal(self, tenant_id: str, deployment: str, secret: str) -> dict[str, str]:
        """An envelope that opens only for this tenant and deployment."""

    @abc.abstractmethod
    def open(self, tenant_id: str, deployment: str, envelope: Mapping[str, Any]) -> str:
        """The credential, or an error if the envelope does not authenticate."""


@dataclass(frozen=True)
class Route:
    """A deployment ready to be called: its credential opened (held in memory only)."""

    deployment: Deployment
    api_key: str | None

    def __repr__(self) -> str:  # never print a credential
        return f"Route({self.deployment.name!r})"


RoutingTable = dict[str, list[Route]]  # model name -> its deployments


class DeploymentService:
    def __init__(self, ledger: Ledger, sealer: CredentialSealer, *, cache_ttl_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._sealer = sealer
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, RoutingTable]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._generations: dict[str, int] = {}  # bumped by invalidate: a read begun before it is not cached

    # --- commands ---------------------------------------------------------------------------------

    def configure(
        self, tenant_id: str, *, name: str, provider: str, model: str, price: Price, model_name: str | None = None,
        base_url: str | None = None, region: str = "", priority: int = 0, timeout_ms: int | None = None,
        max_retries: int = 2, api_key: str | None = None, actor: str = "system",
    ) -> Receipt:
        """Add a deployment, or replace the one of that name. Without `api_key`, an existing credential is kept."""
        if not self._ledger.read_stream(tenant_stream(tenant_id)):
            raise UnknownTenant(tenant_id)
        stream, events, table = self._load(tenant_id)
        if api_key:
            credentials = self._sealer.seal(tenant_id, name, api_key)
        else:
            credentials = table[name].credentials if name in table else None
        deployment = dep.new_deployment(
            name=name, provider=provider, model=model, price=price, model_name=model_name, base_url=base_url,
            region=region, priority=priority, timeout_ms=timeout_ms, max_retries=max_retries, credentials=credentials,
        )
        event = NewEvent(stream, "DeploymentConfigured", deployment.payload(tenant_id), tenant_id=tenant_id,
                         metadata={"actor": actor})
        [receipt] = self._ledger.append([event], {stream: len(events)})
        self.invalidate(tenant_id)
        return receipt

    def remove(self, tenant_id: str, name: str, actor: str = "system") -> Receipt:
        stream, events, table = self._load(tenant_id)
        payload = dep.decide_remove(table, tenant_id, name)
        event = NewEvent(stream, "DeploymentRemoved", payload, tenant_id=tenant_id, metadata={"actor": actor})
        [receipt] = self._ledger.append([event], {stream: len(events)})
        self.invalidate(tenant_id)
        return receipt

    # --- queries ----------------------------------------------------------------------------------

    def list(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's deployments as they may be shown: never a credential."""
        _, _, table = self._load(tenant_id)
        return [d.public() for d in sorted(table.values(), key=lambda d: (d.model_name, d.priority, d.name))]

    def cached_routes(self, tenant_id: str) -> RoutingTable | None:
        """The tenant's routing table if a fresh copy is cached; never blocks."""
        found = self._cache.get(tenant_id)
        if found is not None and found[0] > self._clock():
            return found[1]
        return None

    def routes(self, tenant_id: str) -> RoutingTable:
        """The routing table, read from the ledger when the cached copy is stale (one indexed query)."""
        cached = self.cached_routes(tenant_id)
        if cached is not None:
            return cached
        return self._read_routes(tenant_id)

    def due_for_refresh(self, tenant_id: str) -> bool:
        """True, once, when the cached table is past half its TTL: have `refresh` run off the request's path."""
        with self._lock:
            found = self._cache.get(tenant_id)
            if found is None or tenant_id in self._refreshing or found[0] - self._clock() > self._ttl / 2:
                return False
            self._refreshing.add(tenant_id)
            return True

    def refresh(self, tenant_id: str) -> None:
        """Read the routing table again (blocking); a failure drops the cached copy."""
        try:
            self._read_routes(tenant_id)
        except Exception as exc:
            # Dropped, so that the next request reads it on its path (and reports what fails) rather
            # than every request starting another read in the background.
            log.warning("reading tenant %s's routing table in the background failed: %s", tenant_id, exc)
            with self._lock:
                self._cache.pop(tenant_id, None)
        finally:
            with self._lock:
                self._refreshing.discard(tenant_id)

    def _read_routes(self, tenant_id: str) -> RoutingTable:
        with self._lock:
            started, generation = self._clock(), self._generations.get(tenant_id, 0)
        _, _, table = self._load(tenant_id)
        routing: RoutingTable = {}
        for d in table.values():
            api_key = self._sealer.open(tenant_id, d.name, d.credentials) if d.credentials else None
            routing.setdefault(d.model_name, []).append(Route(d, api_key))
        with self._lock:
            if self._generations.get(tenant_id, 0) == generation:
                self._cache[tenant_id] = (started + self._ttl, routing)
        return routing

    def invalidate(self, tenant_id: str) -> None:
        with self._lock:
            self._cache.pop(tenant_id, None)
            self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1

    def _load(self, tenant_id: str) -> tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Deployment]]:
        stream = dep.deployments_stream(tenant_id)
        events = [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(stream)]
        return stream, events, dep.fold(events)
