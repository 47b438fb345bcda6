"""Commands and queries about tenants and API keys: load the stream, decide, append.

Authentication reads the key's stream on every call, so a revocation holds at once. The gateway's hot
path may go ahead on a key this process authenticated within the last `VERIFIED_KEY_TTL_S` seconds
(`recently_authenticated`, no read) provided it confirms before it hands out an answer: a streamed
answer with `confirm_async` (the read, overlapping the upstream call), a whole answer by recording it
on the condition that the key's stream is still at the version read (one check inside the append,
under the ledger's lock; the read only if it moved). docs/gateway.md, "Authentication".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import orjson

from application.expiring_cache import ExpiringLru
from application.ports import Ledger
from domain import identity
from domain.identity import NewApiKey, Principal
from domain.ledger import ConcurrencyError, NewEvent, Receipt, RecordedEvent

VERIFIED_KEY_TTL_S = 60.0
VERIFIED_KEYS_MAX = 10_000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _decoded(events: Sequence[RecordedEvent]) -> list[tuple[str, dict]]:
    return [(e.type, orjson.loads(e.payload)) for e in events]


class IdentityService:
    def __init__(self, ledger: Ledger, *, verified_key_ttl_s: float = VERIFIED_KEY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger = ledger
        # principals of keys authenticated lately, with the version of the key's stream they were read at, by
        # the token's digest (never the token)
        self._verified: ExpiringLru[bytes, tuple[Principal, int]] = ExpiringLru(verified_key_ttl_s,
                                                                               VERIFIED_KEYS_MAX, clock)

    def _stream(self, stream_id: str) -> list[tuple[str, dict]]:
        return _decoded(self._ledger.read_stream(stream_id))

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
        self.forget_key(key_id)
        try:
            [receipt] = self._ledger.append([event], {stream: len(events)})
        except ConcurrencyError:
            raise identity.ApiKeyAlreadyRevoked(key_id) from None
        finally:
            self.forget_key(key_id)  # again: a read begun before the commit is not put back (ExpiringLru.invalidate_where)
        return receipt

    def authenticate(self, token: str) -> Principal | None:
        """Reads the key's own stream on every call (one indexed query), so a revocation holds at once."""
        parsed = identity.parse_api_key(token)
        if parsed is None:
            return None
        return self._authenticated(token, self._stream(identity.api_key_stream(parsed[0])))

    def _authenticated(self, token: str, stream: list[tuple[str, dict]]) -> Principal | None:
        principal = identity.authenticate(token, stream)
        if principal is None:
            self._verified.pop(_digest(token))
        else:
            self._verified.put(_digest(token), (principal, len(stream)))
        return principal

    def forget_key(self, key_id: str) -> None:
        """The key's stream changed elsewhere (application/change_notices.py): authenticate it again next time."""
        self._verified.invalidate_where(lambda known: known[0].key_id == key_id)

    def forget_everything(self) -> None:
        self._verified.clear()

    def last_until_invalidated(self, lasting: bool) -> None:
        """While every change to keys is announced here: a verified key lasts until its stream changes."""
        self._verified.last_until_invalidated(lasting)

    def recently_authenticated(self, token: str) -> tuple[Principal, int] | None:
        """The principal `authenticate` found for this token in this process lately, without reading, and the
        version of the key's stream it was read at.

        Only for a caller that confirms before it acts on what it did meanwhile: with `confirm_async`, or
        by appending on the condition that the key's stream is still at that version (the gateway).
        """
        return self._verified.get(_digest(token))

    async def confirm_async(self, token: str, tenant_id: str, scope: str) -> int | None:
        """Read the key again: the version of its stream if it still stands for `tenant_id` with `scope`."""
        parsed = identity.parse_api_key(token)
        if parsed is None:
            return None
        events = await self._ledger.read_stream_async(identity.api_key_stream(parsed[0]))
        principal = self._authenticated(token, _decoded(events))
        if principal is None or principal.tenant_id != tenant_id or not principal.has(scope):
            return None
        return len(events)

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
