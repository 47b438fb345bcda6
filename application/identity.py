"""Commands and queries about tenants and API keys: load the stream, decide, append."""

from __future__ import annotations

import orjson

from application.ports import Ledger
from domain import identity
from domain.identity import NewApiKey, Principal
from domain.ledger import ConcurrencyError, NewEvent, Receipt


class IdentityService:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def _stream(self, stream_id: str) -> list[tuple[str, dict]]:
        return [(e.type, orjson.loads(e.payload)) for e in self._ledger.read_stream(stream_id)]

    def tenant_exists(self, tenant_id: str) -> bool:
        return bool(self._ledger.read_stream(identity.tenant_stream(tenant_id)))

    def create_tenant(self, tenant_id: str, name: str | None = None, actor: str = "system") -> Receipt:
        identity.validate_tenant_id(tenant_id)
        event = NewEvent(
            identity.tenant_stream(tenant_id), "TenantCreated",
            {"tenant_id": tenant_id, "name": name or tenant_id}, tenant_id=tenant_id, metadata={"actor": actor},
        )
        try:
            [receipt] = self._ledger.append([event], {event.stream_id: 0})
        except ConcurrencyError:
            raise identity.TenantAlreadyExists(tenant_id) from None
        return receipt

    def issue_key(
        self, tenant_id: str, scopes: object, name: str = "", actor: str = "system"
    ) -> tuple[NewApiKey, Receipt]:
        """A new key; its token is returned here once and never stored."""
        scopes = identity.validate_scopes(scopes)
        if not self.tenant_exists(tenant_id):
            raise identity.UnknownTenant(tenant_id)
        key = identity.generate_api_key()
        event = NewEvent(
            identity.api_key_stream(key.key_id), "ApiKeyIssued",
            {"key_id": key.key_id, "tenant_id": tenant_id, "name": name, "scopes": scopes,
             "secret_sha256": key.secret_hash},
            tenant_id=tenant_id, metadata={"actor": actor},
        )
        [receipt] = self._ledger.append([event], {event.stream_id: 0})
        return key, receipt

    def revoke_key(self, tenant_id: str, key_id: str, reason: str = "", actor: str = "system") -> Receipt:
        stream = identity.api_key_stream(key_id)
        events = self._stream(stream)
        state = identity.key_state(events)
        if state is None or state["tenant_id"] != tenant_id:
            raise identity.UnknownApiKey(key_id)
        if state["revoked"]:
            raise identity.ApiKeyAlreadyRevoked(key_id)
        event = NewEvent(stream, "ApiKeyRevoked", {"key_id": key_id, "reason": reason}, tenant_id=tenant_id,
                         metadata={"actor": actor})
        try:
            [receipt] = self._ledger.append([event], {stream: len(events)})
        except ConcurrencyError:
            raise identity.ApiKeyAlreadyRevoked(key_id) from None
        return receipt

    def authenticate(self, token: str) -> Principal | None:
        """Reads the key's own stream on every call (one indexed query), so a revocation holds at once."""
        parsed = identity.parse_api_key(token)
        if parsed is None:
            return None
        return identity.authenticate(token, self._stream(identity.api_key_stream(parsed[0])))

    def list_keys(self, tenant_id: str) -> list[dict]:
        """Every key of a tenant with its state; never the secret or its hash."""
        keys: dict[str, dict] = {}
        position = 1
        while True:
            batch = self._ledger.read(position, 1000, tenant_id=tenant_id)
            if not batch:
                break
            for e in batch:
                if e.type in ("ApiKeyIssued", "ApiKeyRevoked"):
                    payload = orjson.loads(e.payload)
                    if e.type == "ApiKeyIssued":
                        keys[payload["key_id"]] = {"key_id": payload["key_id"], "name": payload["name"],
                                                   "scopes": payload["scopes"], "revoked": False,
                                                   "issued_at": e.recorded_at}
                    elif payload["key_id"] in keys:
                        keys[payload["key_id"]]["revoked"] = True
            position = batch[-1].position + 1
        return list(keys.values())
