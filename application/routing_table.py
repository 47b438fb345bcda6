"""Commands and queries on a tenant's NEXUS routing table: load the stream, decide, append."""

from __future__ import annotations

import orjson

from application.ports import Ledger
from domain import routing_table as rt
from domain.identity import UnknownTenant, tenant_stream
from domain.ledger import NewEvent, Receipt


class RoutingTableService:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def set(self, tenant_id: str, kind: str, model: str | None, actor: str = "system") -> Receipt | None:
        """Route `kind` to `model` (None clears the entry); None when the table already said so."""
        if not self._ledger.read_stream(tenant_stream(tenant_id)):
            raise UnknownTenant(tenant_id)
        stream = rt.routing_stream(tenant_id)
        events = [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(stream)]
        payload = rt.decide_change(rt.fold(events), tenant_id, kind, model)
        if payload is None:
            return None
        event = NewEvent(stream, "RoutingTableChanged", payload, tenant_id=tenant_id, metadata={"actor": actor})
        [receipt] = self._ledger.append([event], {stream: len(events)})
        return receipt

    def table(self, tenant_id: str) -> dict[str, str]:
        events = [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(rt.routing_stream(tenant_id))]
        return rt.fold(events)
