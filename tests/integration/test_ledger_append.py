"""Appending to the real PostgreSQL ledger: receipts, concurrency control, idempotency, immutability."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import MAX_PAYLOAD_BYTES, ConcurrencyError, EventIdConflict, InvalidEvent, NewEvent
from domain.verify import verify_rows


def opened(n: int = 1, stream: str = "account-1") -> list[NewEvent]:
    return [NewEvent(stream, "AccountOpened", {"n": i}, tenant_id="acme") for i in range(n)]


def test_positions_start_at_one_and_receipts_carry_the_hashes(ledger: PostgresLedger):
    receipts = ledger.append(opened(3), {"account-1": 0})
    assert [r.position for r in receipts] == [1, 2, 3]
    assert [r.stream_version for r in receipts] == [1, 2, 3]
    stored = ledger.read()
    assert [e.entry_hash for e in stored] == [r.entry_hash for r in receipts]
    assert [e.chain_hash for e in stored] == [r.chain_hash for r in receipts]
    assert ledger.head().size == 3


def test_a_stale_expected_version_is_refused_and_writes_nothing(ledger: PostgresLedger):
    ledger.append(opened(2), {"account-1": 0})
    with pytest.raises(ConcurrencyError) as refused:
        ledger.append(opened(1) + opened(1, "account-2"), {"account-1": 1, "account-2": 0})
    assert (refused.value.stream_id, refused.value.expected, refused.value.actual) == ("account-1", 1, 2)
    assert ledger.head().size == 2
    assert ledger.read_stream("account-2") == []


def test_an_expected_version_of_a_stream_the_append_does_not_write_is_a_condition_checked_too(
    ledger: PostgresLedger, database
):
    """The gateway records an inference on the condition that the caller's API key is still at the version
    it authenticated: a stream expected but not written must be checked, even at version 0, and even when
    this committer no longer remembers it (it forgets after another process appended)."""
    ledger.append(opened(1, "key-1"), {"key-1": 0})
    with PostgresLedger(database.app_url) as elsewhere:
        elsewhere.append(opened(1, "unrelated"))
    ledger.append(opened(1, "other"))  # the head moved: the locked way, which keeps only this batch's versions
    ledger.append(opened(1, "other"))  # nobody else appended since: the next append speculates
    with pytest.raises(ConcurrencyError) as absent_expected:
        ledger.append(opened(1, "inference-1"), {"inference-1": 0, "key-1": 0})
    assert (absent_expected.value.stream_id, absent_expected.value.actual) == ("key-1", 1)
    ledger.append(opened(1, "inference-2"), {"inference-2": 0, "key-1": 1})
    with PostgresLedger(database.app_url) as elsewhere:
        elsewhere.append(opened(1, "key-1"), {"key-1": 1})  # revoked, say
    with pytest.raises(ConcurrencyError) as moved:
        ledger.append(opened(1, "inference-3"), {"inference-3": 0, "key-1": 1})
    assert (moved.value.stream_id, moved.value.expected, moved.value.actual) == ("key-1", 1, 2)
    assert [e.stream_id for e in ledger.read()] == ["key-1", "unrelated", "other", "other", "inference-2", "key-1"]


def test_one_append_spans_many_streams_atomically(ledger: PostgresLedger):
    receipts = ledger.append(opened(2, "a") + opened(1, "b"), {"a": 0, "b": 0})
    assert [(r.stream_id, r.stream_version) for r in receipts] == [("a", 1), ("a", 2), ("b", 1)]


def test_appending_the_same_event_ids_again_returns_the_original_receipts(ledger: PostgresLedger):
    events = opened(2)
    first = ledger.append(events, {"account-1": 0})
    again = ledger.append(events, {"account-1": 0})
    assert again == first
    assert ledger.head().size == 2


def test_reusing_an_event_id_for_different_content_is_refused(ledger: PostgresLedger):
    event = opened(1)[0]
    ledger.append([event])
    forged = NewEvent(event.stream_id, event.type, {"n": 99}, tenant_id="acme", event_id=event.event_id)
    with pytest.raises(EventIdConflict):
        ledger.append([forged])
    assert ledger.head().size == 1


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: NewEvent("bad stream id", "Thing", {}), "stream_id"),
        (lambda: NewEvent("s", "not_pascal", {}), "type"),
        (lambda: NewEvent("s", "Thing", ["not", "an", "object"]), "payload"),  # type: ignore[arg-type]
        (lambda: NewEvent("s", "Thing", {}, schema_version=0), "schema_version"),
        (lambda: NewEvent("s", "Thing", {}, event_id="not-a-uuid"), "event_id"),  # type: ignore[arg-type]
    ],
)
def test_malformed_events_are_refused_with_the_field_named(build, field):
    with pytest.raises(InvalidEvent) as refused:
        build()
    assert refused.value.field == field


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"x": float("nan")}, "no JSON representation"),
        ({"x": 2**60}, "safe range"),
        ({"x": object()}, "not a JSON value"),
        ({"x": "y" * MAX_PAYLOAD_BYTES}, "limit"),
    ],
)
def test_unencodable_or_oversized_payloads_are_refused_and_nothing_is_written(ledger, payload, problem):
    with pytest.raises(InvalidEvent, match=problem):
        ledger.append([NewEvent("s", "Thing", payload)])
    assert ledger.head().size == 0


def test_the_application_role_cannot_change_or_delete_ledger_rows(ledger, database):
    ledger.append(opened(1))
    with psycopg.connect(database.app_url, autocommit=True) as conn:
        for statement in (
            "UPDATE ledger.events SET type = 'X'",
            "DELETE FROM ledger.events",
            "TRUNCATE ledger.events",
            "DELETE FROM ledger.heads",
            "UPDATE ledger.append_lock SET ledger_id = ledger_id",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_even_the_owner_is_refused_by_the_trigger(ledger, database):
    ledger.append(opened(1))
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for table in ("events", "heads", "ledgers", "append_lock"):  # the tables that hold rows now
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(f"DELETE FROM ledger.{table}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(f"UPDATE ledger.{table} SET ledger_id = ledger_id" if table in ("ledgers", "append_lock")
                             else f"UPDATE ledger.{table} SET size = size" if table == "heads"
                             else f"UPDATE ledger.{table} SET type = type")
        for table in ("events", "heads", "merkle_nodes", "ledgers", "checkpoints", "signing_keys", "append_lock"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(f"TRUNCATE ledger.{table} CASCADE")
    assert ledger.head().size == 1


def test_the_chain_and_tree_verify_after_many_appends(ledger: PostgresLedger):
    for i in range(40):
        ledger.append([NewEvent(f"s-{i % 3}", "Thing", {"i": i, "f": i / 7})])
    verified = verify_rows(ledger.genesis(), ledger.iter_entries(), [])
    assert verified.size == 40
    assert verified.root == ledger.head().root == ledger.root_at(40)


def test_async_append_shares_the_group_commit(ledger: PostgresLedger):
    import asyncio

    async def many():
        return await asyncio.gather(*(ledger.append_async([NewEvent(f"s-{i}", "Thing", {})]) for i in range(50)))

    results = asyncio.run(many())
    assert sorted(r[0].position for r in results) == list(range(1, 51))


def test_event_ids_are_uuids_and_findable(ledger: PostgresLedger):
    event = opened(1)[0]
    ledger.append([event])
    [found] = ledger.find([event.event_id, uuid.uuid4()])
    assert found.event_id == event.event_id
