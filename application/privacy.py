"""Personal data in events: sealed under one key per data subject, erased by destroying that key.

    seal / protect   gateway hot path: the subject's key (cached, see below), then AES-256-GCM
    open             reads the key from the store on every call, so an erasure holds everywhere at once
    erase            destroys the key and records SubjectKeyShredded, both or neither
    content storage  a per-tenant switch recorded on the tenant's stream; off = content is redacted

Key cache. `seal` keeps unwrapped keys for at most `key_cache_ttl_s` seconds (bounded LRU), because it
runs twice per inference. `erase` evicts the subject in this process before and after it commits, and
a seal that fetched the key while an erasure was in flight does not put it back (`ExpiringLru.invalidate`).
Another process may go on sealing with a destroyed key until its cached copy expires; what it seals
then is unreadable at once, which errs on the side of erasure. `open` never uses the cache. On the
gateway's path (`cached_sealer`) a key past half its TTL is read again in the background and, if it
still stands, kept for another TTL from that read: a busy subject never waits for the store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from application.expiring_cache import ExpiringLru
from application.ports import Ledger, SubjectKeyStore
from domain import sealing
from domain.identity import UnknownTenant, tenant_stream, validate_tenant_id
from domain.ledger import ConcurrencyError, EventIdConflict, NewEvent, Receipt, RecordedEvent
from domain.sealing import (
    CONTENT_STORAGE_POLICY_CHANGED,
    REDACTED,
    SUBJECT_KEY_SHREDDED,
    ContentStorageDisabled,
    DataKey,
    EnvelopeInvalid,
    SubjectAlreadyErased,
    SubjectErased,
    UnknownSubject,
)

KEY_CACHE_TTL_S = 10.0
SWITCH_CACHE_TTL_S = 600.0
KEY_CACHE_SIZE = 10_000
SWITCH_CACHE_SIZE = 10_000  # tenants whose content switch is remembered
_SHREDDING_IDS = uuid.UUID("5b0c2f8e-7d1a-4f53-9a51-6e6578757331")  # namespace of erasure event ids


def privacy_stream(tenant_id: str, subject_id: str) -> str:
    """A subject's own stream; '/' cannot occur in tenant ids, so the name is unambiguous."""
    return f"privacy-{tenant_id}/{subject_id}"


def shredding_event_id(tenant_id: str, subject_id: str, kid: str) -> uuid.UUID:
    """Deterministic, so a retried erasure appends nothing new: the ledger returns the first receipt."""
    return uuid.uuid5(_SHREDDING_IDS, f"{tenant_id}/{subject_id}/{kid}")


def _sealing(
    key: DataKey | None, stream: str, version: int
) -> tuple[Callable[[Any], dict[str, Any]], str, int]:
    """What `sealer_async` gives: the sealer (redaction without a key: content storage is off), and the
    tenant's stream and the version its switch was read at."""
    if key is None:
        return (lambda value: dict(REDACTED)), stream, version
    return (lambda value: sealing.seal_with(key, value)), stream, version


class PrivacyService:
    def __init__(
        self,
        keystore: SubjectKeyStore,
        ledger: Ledger,
        *,
        key_cache_ttl_s: float = KEY_CACHE_TTL_S,
        key_cache_size: int = KEY_CACHE_SIZE,
        switch_cache_size: int = SWITCH_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keystore
        self._ledger = ledger
        # data keys by (tenant, subject); an erasure here invalidates, so a seal that read the key while
        # the erasure was in flight does not put it back
        self._cache: ExpiringLru[tuple[str, str], DataKey] = ExpiringLru(key_cache_ttl_s, key_cache_size, clock)
        # (version of the tenant's stream, content switch) by tenant, for sealer_async; exact while that
        # version holds, which its callers' appends check, so the TTL only bounds memory of idle tenants
        self._switches: ExpiringLru[str, tuple[int, bool]] = ExpiringLru(SWITCH_CACHE_TTL_S, switch_cache_size, clock)

    def close(self) -> None:
        self._keys.close()

    # --- sealing ----------------------------------------------------------------------------------

    def seal(self, tenant_id: str, subject_id: str, value: Any) -> dict[str, str]:
        """The value as an envelope for the subject; ContentStorageDisabled if the tenant stores no content."""
        validate_tenant_id(tenant_id)
        sealing.validate_subject_id(subject_id)
        if not self.content_storage_enabled(tenant_id):
            raise ContentStorageDisabled(tenant_id)
        return sealing.seal_with(self._sealing_key(tenant_id, subject_id), value)

    def protect(self, tenant_id: str, subject_id: str, value: Any) -> dict[str, Any]:
        """What the gateway stores in place of content: an envelope, or {"redacted": true} if storage is off."""
        validate_tenant_id(tenant_id)
        sealing.validate_subject_id(subject_id)
        if not self.content_storage_enabled(tenant_id):
            return dict(REDACTED)
        return sealing.seal_with(self._sealing_key(tenant_id, subject_id), value)

    def sealer(self, tenant_id: str, subject_id: str) -> Callable[[Any], dict[str, Any]]:
        """`protect` in two halves: the reads (switch, data key) now, the AES-GCM later, without I/O.

        The gateway calls this while the upstream call is in flight and seals the content once it has
        the completion; the switch then holds as of the request's start.
        """
        validate_tenant_id(tenant_id)
        sealing.validate_subject_id(subject_id)
        if not self.content_storage_enabled(tenant_id):
            return lambda value: dict(REDACTED)
        key = self._sealing_key(tenant_id, subject_id)
        return lambda value: sealing.seal_with(key, value)

    async def sealer_async(
        self, tenant_id: str, subject_id: str
    ) -> tuple[Callable[[Any], dict[str, Any]], str, int]:
        """`sealer` on the event loop, for a caller that records the sealed content on a condition: that the
        tenant's stream is still at the version returned (so the switch read then still holds).

        The switch is read once per tenant and version, not per call: the condition checks it inside the
        caller's append, and a caller whose condition failed calls `forget_switch` and seals again. Only a
        data key missing from the cache is fetched, in a worker thread.
        """
        cached = self.cached_sealer(tenant_id, subject_id)
        if cached is not None:
            return cached
        stream = tenant_stream(tenant_id)
        known = self._switches.get(tenant_id)
        if known is None:
            events = await self._ledger.read_stream_async(stream)
            known = (len(events), sealing.content_storage_enabled(_switch_events(events)))
            self._switches.put(tenant_id, known)
        version, enabled = known
        if not enabled:
            return _sealing(None, stream, version)
        key = self._cache.get((tenant_id, subject_id)) or await asyncio.to_thread(self._sealing_key, tenant_id, subject_id)
        return _sealing(key, stream, version)

    def cached_sealer(
        self, tenant_id: str, subject_id: str
    ) -> tuple[Callable[[Any], dict[str, Any]], str, int] | None:
        """What `sealer_async` gives, when its caches hold all it needs (the usual case); None otherwise.

        Lets the gateway skip a task per request for reads it need not make."""
        validate_tenant_id(tenant_id)
        sealing.validate_subject_id(subject_id)
        known = self._switches.get(tenant_id)
        if known is None:
            return None
        version, enabled = known
        if not enabled:
            return _sealing(None, tenant_stream(tenant_id), version)
        key = self._cache.get_refreshing((tenant_id, subject_id), self._confirmed)
        if key is None:
            return None
        return _sealing(key, tenant_stream(tenant_id), version)

    def _confirmed(self, cached: DataKey) -> DataKey | None:
        """The cached key, read again from the store before it expires (so a busy subject's requests never
        wait for the store, and another process's erasure still holds here within the TTL); None if it
        was destroyed or replaced."""
        stored = self._keys.get(cached.tenant_id, cached.subject_id)
        return stored if stored is not None and stored.kid == cached.kid else None

    def forget_switch(self, tenant_id: str) -> None:
        """The tenant's stream moved on from the version `sealer_async` gave: read the switch again next time."""
        self._switches.invalidate(tenant_id)

    def forget_key(self, tenant_id: str, subject_id: str) -> None:
        """The subject's key was destroyed elsewhere (application/change_notices.py): never seal with it again."""
        self._cache.invalidate((tenant_id, subject_id))

    def forget_everything(self) -> None:
        self._cache.clear()
        self._switches.clear()

    def last_until_invalidated(self, lasting: bool) -> None:
        """While every destroyed key is announced here: a data key lasts until destroyed, not read again."""
        self._cache.last_until_invalidated(lasting)

    @staticmethod
    def is_sealed(value: object) -> bool:
        return sealing.is_sealed(value)

    @staticmethod
    def is_redacted(value: object) -> bool:
        return sealing.is_redacted(value)

    def _sealing_key(self, tenant_id: str, subject_id: str) -> DataKey:
        key = self._cache.get((tenant_id, subject_id))
        if key is None:
            read = self._cache.read_started()
            key = self._keys.get_or_create(tenant_id, subject_id)
            self._cache.put_read((tenant_id, subject_id), key, read)
        return key

    # --- opening ----------------------------------------------------------------------------------

    def open(self, tenant_id: str, envelope: Mapping[str, Any]) -> Any:
        """The sealed value. SubjectErased if its key was destroyed; EnvelopeInvalid if it was altered or moved."""
        parsed = sealing.parse_envelope(envelope)
        key = self._keys.get(tenant_id, parsed.subject_id)
        if key is None or key.kid != parsed.kid:
            shredded = self._shredding_of(tenant_id, parsed.subject_id, parsed.kid)
            if shredded is not None:
                raise SubjectErased(tenant_id, parsed.subject_id, parsed.kid, shredded.position)
            raise EnvelopeInvalid(
                f"tenant {tenant_id!r} has no key {parsed.kid} for subject {parsed.subject_id!r}, and none was"
                " ever erased: the envelope was sealed elsewhere or moved from another tenant or subject"
            )
        return sealing.open_with(key, tenant_id, parsed)

    def _shreddings(self, tenant_id: str, subject_id: str) -> list[RecordedEvent]:
        try:
            stream = privacy_stream(validate_tenant_id(tenant_id), sealing.validate_subject_id(subject_id))
        except ValueError:
            return []
        return [e for e in self._ledger.read_stream(stream) if e.type == SUBJECT_KEY_SHREDDED]

    def _shredding_of(self, tenant_id: str, subject_id: str, kid: str) -> RecordedEvent | None:
        for event in self._shreddings(tenant_id, subject_id):
            if orjson.loads(event.payload)["kid"] == kid:
                return event
        return None

    # --- erasure ----------------------------------------------------------------------------------

    def erase(self, tenant_id: str, subject_id: str, actor: str) -> Receipt:
        """Destroy the subject's data key and record SubjectKeyShredded (tenant, subject, kid; no content).

        A second erasure with nothing sealed in between raises SubjectAlreadyErased; a subject that never
        had a key raises UnknownSubject. Content sealed after an erasure gets a new key, which a later
        erasure destroys in turn.
        """
        validate_tenant_id(tenant_id)
        sealing.validate_subject_id(subject_id)
        self._cache.invalidate((tenant_id, subject_id))
        with self._keys.destroying(tenant_id, subject_id) as kid:
            if kid is None:
                earlier = self._shreddings(tenant_id, subject_id)
                if earlier:
                    raise SubjectAlreadyErased(tenant_id, subject_id, earlier[-1].position)
                raise UnknownSubject(tenant_id, subject_id)
            receipt = self._append_once(
                NewEvent(
                    privacy_stream(tenant_id, subject_id), SUBJECT_KEY_SHREDDED,
                    {"tenant_id": tenant_id, "subject_id": subject_id, "kid": kid},
                    tenant_id=tenant_id, metadata={"actor": actor},
                    event_id=shredding_event_id(tenant_id, subject_id, kid),
                )
            )
        # Again after the commit: a seal in this process may have read the key before the deletion was visible.
        self._cache.invalidate((tenant_id, subject_id))
        return receipt

    def _append_once(self, event: NewEvent) -> Receipt:
        """Append, or the receipt of the same erasure recorded by an earlier attempt whose deletion rolled back."""
        try:
            [receipt] = self._ledger.append([event])
            return receipt
        except EventIdConflict:  # recorded before, by another actor: that record stands
            [found] = self._ledger.find([event.event_id])
            return Receipt(found.event_id, found.position, found.stream_id, found.stream_version,
                           found.entry_hash, found.chain_hash)

    # --- the content-storage switch ---------------------------------------------------------------

    def content_storage_enabled(self, tenant_id: str) -> bool:
        """Read from the tenant's stream on every call (one indexed query), so a switch holds at once."""
        validate_tenant_id(tenant_id)
        return sealing.content_storage_enabled(self._tenant_events(tenant_id))

    def set_content_storage(self, tenant_id: str, enabled: bool, actor: str) -> Receipt:
        """Record ContentStoragePolicyChanged on the tenant's stream (also when it repeats the current value)."""
        validate_tenant_id(tenant_id)
        stream = tenant_stream(tenant_id)
        attempts = 5
        for attempt in range(attempts):
            version = len(self._ledger.read_stream(stream))
            if version == 0:
                raise UnknownTenant(tenant_id)
            event = NewEvent(
                stream, CONTENT_STORAGE_POLICY_CHANGED, {"tenant_id": tenant_id, "content_storage": bool(enabled)},
                tenant_id=tenant_id, metadata={"actor": actor},
            )
            try:
                [receipt] = self._ledger.append([event], {stream: version})
                self._switches.pop(tenant_id)  # this process's next seal need not fail its condition first
                return receipt
            except ConcurrencyError:
                if attempt == attempts - 1:
                    raise
                # Another tenant event landed first. The switch does not depend on it, but the version
                # check is what proves the tenant exists at the moment of writing, so read and retry.
        raise AssertionError("unreachable")

    def _tenant_events(self, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
        return _switch_events(self._ledger.read_stream(tenant_stream(tenant_id)))


def _switch_events(events: list[RecordedEvent]) -> list[tuple[str, dict[str, Any]]]:
    """A tenant stream as domain.sealing.content_storage_enabled reads it (only the switch's payloads)."""
    return [(e.type, orjson.loads(e.payload) if e.type == CONTENT_STORAGE_POLICY_CHANGED else {}) for e in events]
