"""Commands and queries about a tenant's deployments: load the stream, decide, append; and the routing table.

The gateway reads the routing table on every request, so it is cached per tenant for `cache_ttl_s`
(default 1 s) with credentials already opened. A configure or remove through this process drops the
tenant's entry at once; another process sees the change within the TTL. On the gateway's path
(`cached_routes`) a table past half its TTL is read again in the background, so a busy tenant's
requests never wait for that read; the TTL counts from the start of a read, which keeps the bound
(`ExpiringLru.get_refreshing`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from application.expiring_cache import ExpiringLru
from application.ports import Ledger
from domain import deployments as dep
from domain.deployments import Deployment
from domain.identity import UnknownTenant, tenant_stream
from domain.ledger import NewEvent, Receipt
from domain.pricing import Price

ROUTING_TABLES_CACHED = 10_000  # tenants; a table is small (a few deployments), so this bounds memory loosely


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


@dataclass(frozen=True)
class RoutingTable:
    """A tenant's deployments ready to be called, by model name, and when its inferences are recorded."""

    models: dict[str, list[Route]]
    recording: str = dep.DEFERRED

    def get(self, model_name: str) -> list[Route] | None:
        return self.models.get(model_name)

    @property
    def strict_recording(self) -> bool:
        return self.recording == dep.STRICT


class DeploymentService:
    def __init__(self, ledger: Ledger, sealer: CredentialSealer, *, cache_ttl_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        self._sealer = sealer
        self._cache: ExpiringLru[str, RoutingTable] = ExpiringLru(cache_ttl_s, ROUTING_TABLES_CACHED, clock)

    # --- commands ---------------------------------------------------------------------------------

    def configure(
        self, tenant_id: str, *, name: str, provider: str, model: str, price: Price, model_name: str | None = None,
        base_url: str | None = None, region: str = "", priority: int = 0, timeout_ms: int | None = None,
        max_retries: int = 2, api_key: str | None = None, actor: str = "system",
    ) -> Receipt:
        """Add a deployment, or replace the one of that name. Without `api_key`, an existing credential is kept."""
        self._require_tenant(tenant_id)
        stream, events, table = self._load(tenant_id)
        dep.check_credential(provider, api_key or None, kept=name in table and table[name].credentials is not None)
        if api_key:
            credentials, facts = self._sealer.seal(tenant_id, name, api_key), dep.credential_facts(provider, api_key)
        elif name in table:
            credentials, facts = table[name].credentials, table[name].credential_facts
        else:
            credentials, facts = None, None
        deployment = dep.new_deployment(
            name=name, provider=provider, model=model, price=price, model_name=model_name, base_url=base_url,
            region=region, priority=priority, timeout_ms=timeout_ms, max_retries=max_retries, credentials=credentials,
            credential_facts=facts,
        )
        event = NewEvent(stream, "DeploymentConfigured", deployment.payload(tenant_id), tenant_id=tenant_id,
                         metadata={"actor": actor})
        [receipt] = self._ledger.append([event], {stream: len(events)})
        self.invalidate(tenant_id)
        return receipt

    def describe_credentials(self, tenant_id: str, actor: str = "system") -> list[str]:
        """Record what may be shown about each credential sealed before credentials had facts (before the
        sixteenth session): each such deployment configured again, unchanged but for its facts, in one append.
        The names described, in order; none if every credential already has its facts."""
        self._require_tenant(tenant_id)
        stream, events, table = self._load(tenant_id)
        described = [replace(d, credential_facts=dep.credential_facts(d.provider, self._sealer.open(tenant_id, d.name,
                                                                                                   d.credentials)))
                     for d in sorted(table.values(), key=lambda d: d.name)
                     if d.credentials is not None and not d.credential_facts]
        if described:
            metadata = {"actor": actor, "reason": "credential facts described"}
            self._ledger.append([NewEvent(stream, "DeploymentConfigured", d.payload(tenant_id), tenant_id=tenant_id,
                                          metadata=metadata) for d in described], {stream: len(events)})
            self.invalidate(tenant_id)
        return [d.name for d in described]

    def set_recording(self, tenant_id: str, mode: str, actor: str = "system") -> Receipt:
        """Record the tenant's recording mode (domain.deployments.STRICT or DEFERRED); every API process
        follows it within the routing table's TTL, this one at once."""
        self._require_tenant(tenant_id)
        payload = dep.decide_recording(tenant_id, mode)
        stream, events, _ = self._load(tenant_id)
        event = NewEvent(stream, dep.RECORDING_POLICY_CHANGED, payload, tenant_id=tenant_id, metadata={"actor": actor})
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

    def recording(self, tenant_id: str) -> str:
        """The tenant's recording mode as recorded (not cached); UnknownTenant, as `set_recording` raises."""
        self._require_tenant(tenant_id)
        _, events, _ = self._load(tenant_id)
        return dep.recording_mode(events)

    def cached_routes(self, tenant_id: str) -> RoutingTable | None:
        """The tenant's routing table if a fresh copy is cached (read again in the background once it is past
        half its TTL); never blocks."""
        return self._cache.get_refreshing(tenant_id, lambda _: self._read_routes(tenant_id))

    def routes(self, tenant_id: str) -> RoutingTable:
        """The routing table, read from the ledger when the cached copy is stale (one indexed query)."""
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        read = self._cache.read_started()
        routing = self._read_routes(tenant_id)
        self._cache.put_read(tenant_id, routing, read)
        return routing

    def _read_routes(self, tenant_id: str) -> RoutingTable:
        _, events, table = self._load(tenant_id)
        models: dict[str, list[Route]] = {}
        for d in table.values():
            api_key = self._sealer.open(tenant_id, d.name, d.credentials) if d.credentials else None
            models.setdefault(d.model_name, []).append(Route(d, api_key))
        return RoutingTable(models, dep.recording_mode(events))

    def _require_tenant(self, tenant_id: str) -> None:
        if not self._ledger.read_stream(tenant_stream(tenant_id)):
            raise UnknownTenant(tenant_id)

    def invalidate(self, tenant_id: str) -> None:
        self._cache.invalidate(tenant_id)

    def forget_everything(self) -> None:
        self._cache.clear()

    def last_until_invalidated(self, lasting: bool) -> None:
        """While every change to deployments is announced here: a routing table lasts until one comes."""
        self._cache.last_until_invalidated(lasting)

    def _load(self, tenant_id: str) -> tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Deployment]]:
        stream = dep.deployments_stream(tenant_id)
        events = [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(stream)]
        return stream, events, dep.fold(events)
