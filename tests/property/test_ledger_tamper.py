"""Whatever a ledger holds, any single change to its stored rows is caught, at the first position it touches.

Each example builds a small ledger through the real append path (several commits, streams and
tenants, some signed checkpoints), then applies single changes the way an intruder with superuser
rights would: in a transaction that switches the append-only triggers off
(session_replication_role = replica), verifying over that same connection, and rolling back, so the
next change starts from the intact ledger again. Verification runs with small segments so that
changes land at segment seams as well as inside them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.keystore import SigningKey
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.ledger_reader import PostgresLedgerReader
from adapters.postgres.ledger_store import PostgresLedger
from application.verification import VerificationReport, VerifyOptions, verify_ledger
from domain.canonical import canonical_json
from domain.checkpoint import Checkpoint
from domain.entry import Genesis, chain_link, entry_bytes, entry_hash, format_timestamp
from domain.ledger import NewEvent
from domain.verify import FaultKind
from tests.conftest import TestDatabase as Database
from tests.conftest import drop_database, make_database

pytestmark = pytest.mark.slow

STREAMS = ["chat-1", "chat-2", "billing-7", "keys"]
TENANTS = ["acme", "globex", "_system"]
TYPES = ["InferenceCompleted", "ChargeRecorded", "PromptVersionCommitted"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"

words = st.text(alphabet=LETTERS, min_size=1, max_size=10)
payloads = st.dictionaries(words, st.one_of(words, st.integers(0, 10**9)), min_size=1, max_size=4)
events = st.tuples(st.sampled_from(STREAMS), st.sampled_from(TENANTS), st.sampled_from(TYPES), payloads, words)
commits = st.lists(st.tuples(st.lists(events, min_size=1, max_size=9), st.booleans()), min_size=1, max_size=8)
# At least 16 entries: the store keeps Merkle nodes of 16 leaves and more.
commits_with_nodes = st.lists(st.tuples(st.lists(events, min_size=4, max_size=9), st.booleans()), min_size=4, max_size=8)
# (segment size, batch size): small segments put changes at seams; small batches make the precise
# path step in while the store is still streaming the segment.
segment_sizes = st.sampled_from([(4, 64), (8, 3), (16, 1), (1 << 15, 64), (1 << 15, 5)])

EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# --- the ledger under test -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tamper_db(server_url: str, template_db: str) -> Iterator[Database]:
    db = make_database(server_url, template_db)
    yield db
    drop_database(server_url, db.name)


@pytest.fixture(scope="module")
def signer(tamper_db: Database) -> SigningKey:
    key = SigningKey(Ed25519PrivateKey.generate())
    PostgresCheckpointStore(tamper_db.admin_url).publish_key(key.key_id, key.public_key)
    return key


@dataclass
class Built:
    size: int
    head_sizes: list[int]
    checkpoint_sizes: list[int]


def build(db: Database, signer: SigningKey, recipe: list) -> Built:
    """Empty the ledger (as a superuser, triggers off) and append the recipe's commits for real."""
    with psycopg.connect(db.admin_url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("TRUNCATE ledger.events, ledger.merkle_nodes, ledger.heads, ledger.checkpoints")
    store = PostgresCheckpointStore(db.admin_url)
    checkpoint_sizes = []
    with PostgresLedger(db.app_url) as ledger:
        genesis = ledger.genesis()
        for batch, sign in recipe:
            ledger.append(
                [
                    ledger_event(stream, tenant, type_, payload, trace)
                    for stream, tenant, type_, payload, trace in batch
                ]
            )
            if sign:
                head = ledger.head()
                unsigned = Checkpoint(
                    genesis.ledger_id, genesis.hash_alg, head.size, head.root, head.chain_head,
                    format_timestamp(dt.datetime.now(dt.UTC)), signer.key_id,
                )
                store.add(Checkpoint(**{**unsigned.__dict__, "signature": signer.sign(unsigned.message())}))
                checkpoint_sizes.append(head.size)
        heads = [h.size for h in ledger.heads()]
    return Built(heads[-1], heads, checkpoint_sizes)


def ledger_event(stream: str, tenant: str, type_: str, payload: dict, trace: str) -> NewEvent:
    return NewEvent(stream, type_, payload, tenant_id=tenant, metadata={"trace": trace})


def verify_tampered(db: Database, segment_size: tuple[int, int], *statements: tuple[str, tuple]) -> VerificationReport:
    """Apply the statements as an intruder would, verify over the same connection, then undo them."""
    with psycopg.connect(db.admin_url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement, params in statements:
            conn.execute(statement, params)  # type: ignore[arg-type]
        size, chunk = segment_size
        report = verify_ledger(PostgresLedgerReader(conn), VerifyOptions(segment_size=size, chunk=chunk))
        conn.rollback()
    return report


def scalar(db: Database, query: str, params: tuple = ()) -> object:
    with psycopg.connect(db.admin_url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def assert_caught(report: VerificationReport, position: int, kinds: set[FaultKind]) -> None:
    assert report.fault is not None, "the change went unnoticed"
    assert report.fault.position == position, str(report.fault)
    assert report.fault.kind in kinds, str(report.fault)


# --- the specification -----------------------------------------------------------------------------


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes)
def test_an_untouched_ledger_verifies_with_every_row_on_the_fast_path(tamper_db, signer, recipe, segment_size):
    built = build(tamper_db, signer, recipe)
    report = verify_tampered(tamper_db, segment_size)
    assert report.ok, str(report.fault)
    assert report.size == built.size
    assert report.heads_checked == len(built.head_sizes)
    assert report.checkpoints_checked == len(built.checkpoint_sizes)
    assert report.precise_rows == 0
    with PostgresLedger(tamper_db.app_url) as ledger:
        assert report.root == ledger.head().root == ledger.root_at(built.size)


# Each column, how one byte of it is changed, and what the fault must be called.
COLUMN_CHANGES = {
    "payload": ("UPDATE ledger.events SET payload = %s::json WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "metadata": ("UPDATE ledger.events SET metadata = %s::json WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "type": ("UPDATE ledger.events SET type = %s WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "stream_id": ("UPDATE ledger.events SET stream_id = %s WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "tenant_id": ("UPDATE ledger.events SET tenant_id = %s WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "event_id": ("UPDATE ledger.events SET event_id = %s WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "stream_version": (
        "UPDATE ledger.events SET stream_version = stream_version + 1000 + %s WHERE position = %s",
        FaultKind.CONTENT_CHANGED,
    ),
    "schema_version": (
        "UPDATE ledger.events SET schema_version = schema_version + 1 + %s WHERE position = %s",
        FaultKind.CONTENT_CHANGED,
    ),
    "recorded_at": (
        "UPDATE ledger.events SET recorded_at = recorded_at + make_interval(secs => (1 + %s) / 1e6) WHERE position = %s",
        FaultKind.CONTENT_CHANGED,
    ),
    "prev_hash": ("UPDATE ledger.events SET prev_hash = %s WHERE position = %s", FaultKind.LINK_BROKEN),
    "entry_hash": ("UPDATE ledger.events SET entry_hash = %s WHERE position = %s", FaultKind.CONTENT_CHANGED),
    "chain_hash": ("UPDATE ledger.events SET chain_hash = %s WHERE position = %s", FaultKind.LINK_BROKEN),
}


def changed_value(column: str, current: object, pick: int) -> object:
    """One byte of `current` changed, keeping the value storable (valid JSON, unique keys, a UUID)."""
    if column in ("payload", "metadata"):  # flip a letter: letters occur only inside keys and strings
        text = current
        spots = [i for i, ch in enumerate(text) if ch in LETTERS]
        i = spots[pick % len(spots)]
        return text[:i] + LETTERS[(LETTERS.index(text[i]) + 1) % 26] + text[i + 1 :]
    if column in ("stream_id", "tenant_id", "type"):  # '~' is in no name, so no unique key collides
        i = pick % len(current)
        return current[:i] + "~" + current[i + 1 :]
    if column == "event_id":
        text = str(current)
        spots = [i for i, ch in enumerate(text) if ch != "-"]
        i = spots[pick % len(spots)]
        return uuid.UUID(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :])
    if column.endswith("_hash"):
        raw = bytearray(current)
        if pick % 5 == 0:  # a hash one byte short, or one byte long: no column may shift into the next
            return bytes(raw[:-1]) if pick % 2 else bytes(raw) + b"\x00"
        raw[pick % len(raw)] ^= 1 << (pick % 8)
        return bytes(raw)
    return pick % 7  # numeric columns: the statement adds something to the stored value


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes, data=st.data())
def test_a_changed_byte_in_any_column_is_caught_at_its_row(tamper_db, signer, recipe, segment_size, data):
    built = build(tamper_db, signer, recipe)
    for _ in range(3):
        position = data.draw(st.integers(1, built.size), label="position")
        column = data.draw(st.sampled_from(sorted(COLUMN_CHANGES)), label="column")
        pick = data.draw(st.integers(0, 10**6), label="pick")
        statement, kind = COLUMN_CHANGES[column]
        current = scalar(tamper_db, f"SELECT {column}::text FROM ledger.events WHERE position = %s", (position,))
        if column.endswith("_hash") or column == "event_id":
            current = scalar(tamper_db, f"SELECT {column} FROM ledger.events WHERE position = %s", (position,))
        report = verify_tampered(tamper_db, segment_size, (statement, (changed_value(column, current, pick), position)))
        assert_caught(report, position, {kind})


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes, data=st.data())
def test_a_deleted_swapped_or_renumbered_row_is_caught_at_the_first_position_it_disturbs(
    tamper_db, signer, recipe, segment_size, data
):
    built = build(tamper_db, signer, recipe)
    n = built.size
    position = data.draw(st.integers(1, n), label="position")
    deleted = verify_tampered(tamper_db, segment_size, ("DELETE FROM ledger.events WHERE position = %s", (position,)))
    # Deleting the last row of a complete stored subtree (32 of 32, say) also leaves that subtree's stored
    # node dangling: at the same position, that finding is as true as the head's missing entry.
    assert_caught(deleted, position,
                  {FaultKind.POSITION_MISSING, FaultKind.HEAD_MISSING_ENTRIES, FaultKind.NODE_UNEXPECTED})

    renumbered_to = n + data.draw(st.integers(1, 5), label="beyond")
    renumbered = verify_tampered(
        tamper_db, segment_size, ("UPDATE ledger.events SET position = %s WHERE position = %s", (renumbered_to, position))
    )
    assert_caught(renumbered, position, {FaultKind.POSITION_MISSING})

    if n >= 2:
        first, second = sorted(data.draw(st.lists(st.integers(1, n), min_size=2, max_size=2, unique=True), label="swap"))
        parked = 2**40  # a free position to park one row while the other moves (the key is unique)
        swapped = verify_tampered(
            tamper_db,
            segment_size,
            ("UPDATE ledger.events SET position = %s WHERE position = %s", (parked, first)),
            ("UPDATE ledger.events SET position = %s WHERE position = %s", (first, second)),
            ("UPDATE ledger.events SET position = %s WHERE position = %s", (second, parked)),
        )
        assert_caught(swapped, first, {FaultKind.ORDER_CHANGED})


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes)
def test_an_entry_appended_with_correct_hashes_but_no_tree_head_is_caught_by_the_heads(
    tamper_db, signer, recipe, segment_size
):
    built = build(tamper_db, signer, recipe)
    n = built.size
    with PostgresLedger(tamper_db.app_url) as ledger:
        genesis = ledger.genesis()
        last = ledger.read(from_position=n, limit=1)[0]
    forged_at = dt.datetime.now(dt.UTC)
    event_id = uuid.uuid4()
    leaf = entry_hash(
        genesis.hasher,
        entry_bytes(
            ledger_id=genesis.ledger_id, position=n + 1, event_id=str(event_id), tenant_id="acme", stream_id="forged",
            stream_version=1, type="ChargeRecorded", schema_version=1, payload=b'{"amount":1}', metadata=b"{}",
            recorded_at=format_timestamp(forged_at),
        ),
    )
    report = verify_tampered(
        tamper_db,
        segment_size,
        (
            "INSERT INTO ledger.events (position, event_id, tenant_id, stream_id, stream_version, type, schema_version,"
            " payload, metadata, recorded_at, prev_hash, entry_hash, chain_hash)"
            " VALUES (%s, %s, 'acme', 'forged', 1, 'ChargeRecorded', 1, '{\"amount\":1}', '{}', %s, %s, %s, %s)",
            (n + 1, event_id, forged_at, last.chain_hash, leaf, chain_link(genesis.hasher, last.chain_hash, leaf)),
        ),
    )
    # When n + 1 completes a subtree of stored size, its node is missing too, and named first.
    assert_caught(report, n + 1, {FaultKind.BEYOND_HEAD, FaultKind.NODE_MISSING})


@EXAMPLES
@given(recipe=commits_with_nodes, segment_size=segment_sizes, data=st.data())
def test_a_changed_missing_or_stray_merkle_node_is_named(tamper_db, signer, recipe, segment_size, data):
    built = build(tamper_db, signer, recipe)
    with psycopg.connect(tamper_db.admin_url) as conn:
        nodes = conn.execute("SELECT level, idx FROM ledger.merkle_nodes ORDER BY level, idx").fetchall()
    level, index = data.draw(st.sampled_from(nodes), label="node")
    completed_at = (index + 1) << level
    changed = verify_tampered(
        tamper_db,
        segment_size,
        (
            "UPDATE ledger.merkle_nodes SET hash = set_byte(hash, %s, get_byte(hash, %s) # 1) WHERE level = %s AND idx = %s",
            (index % 32, index % 32, level, index),
        ),
    )
    assert_caught(changed, completed_at, {FaultKind.NODE_MISMATCH})
    missing = verify_tampered(
        tamper_db, segment_size, ("DELETE FROM ledger.merkle_nodes WHERE level = %s AND idx = %s", (level, index))
    )
    assert_caught(missing, completed_at, {FaultKind.NODE_MISSING})
    stray_level = data.draw(st.integers(0, 6), label="stray level")
    stray_index = data.draw(st.integers(0, 8), label="stray index")
    if stray_level >= 4:  # at a stored level it must lie beyond the tree, or it would be a real node
        stray_index += built.size >> stray_level
    stray = verify_tampered(
        tamper_db,
        segment_size,
        (
            "INSERT INTO ledger.merkle_nodes (level, idx, hash) VALUES (%s, %s, %s)",
            (stray_level, stray_index, bytes(32)),
        ),
    )
    assert_caught(stray, (stray_index + 1) << stray_level, {FaultKind.NODE_UNEXPECTED})


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes, data=st.data())
def test_a_changed_moved_or_dropped_tree_head_is_named(tamper_db, signer, recipe, segment_size, data):
    built = build(tamper_db, signer, recipe)
    n = built.size
    size = data.draw(st.sampled_from(built.head_sizes), label="head")
    column = data.draw(st.sampled_from(["root", "chain_head", "frontier"]), label="column")
    changed = verify_tampered(
        tamper_db,
        segment_size,
        (f"UPDATE ledger.heads SET {column} = set_byte({column}, 0, get_byte({column}, 0) # 1) WHERE size = %s", (size,)),
    )
    assert_caught(changed, size, {FaultKind.ROOT_MISMATCH})

    free = [s for s in range(1, n + 4) if s not in built.head_sizes]
    if free:
        moved_to = data.draw(st.sampled_from(free), label="moved to")
        moved = verify_tampered(tamper_db, segment_size, ("UPDATE ledger.heads SET size = %s WHERE size = %s", (moved_to, size)))
        assert_caught(moved, moved_to if moved_to <= n else n + 1, {FaultKind.ROOT_MISMATCH, FaultKind.HEAD_MISSING_ENTRIES})

    before_last = built.head_sizes[-2] if len(built.head_sizes) > 1 else 0
    dropped = verify_tampered(tamper_db, segment_size, ("DELETE FROM ledger.heads WHERE size = %s", (n,)))
    assert_caught(dropped, before_last + 1, {FaultKind.BEYOND_HEAD})


@EXAMPLES
@given(recipe=commits, segment_size=segment_sizes, data=st.data())
def test_a_changed_signed_checkpoint_is_named(tamper_db, signer, recipe, segment_size, data):
    built = build(tamper_db, signer, recipe)
    if not built.checkpoint_sizes:
        return
    size = data.draw(st.sampled_from(built.checkpoint_sizes), label="checkpoint")
    column = data.draw(st.sampled_from(["root", "chain_head", "signature"]), label="column")
    report = verify_tampered(
        tamper_db,
        segment_size,
        (
            f"UPDATE ledger.checkpoints SET {column} = set_byte({column}, 3, get_byte({column}, 3) # 4) WHERE tree_size = %s",
            (size,),
        ),
    )
    assert_caught(report, size, {FaultKind.SIGNATURE_INVALID, FaultKind.CHECKPOINT_MISMATCH})


# Any text PostgreSQL can store (no NUL), any JSON the canonical encoder takes, any microsecond.
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def genesis(tamper_db: Database) -> Genesis:
    with PostgresLedger(tamper_db.app_url) as ledger:
        return ledger.genesis()


@settings(max_examples=30, deadline=None)
@given(
    tenant=texts, stream=texts, type_=texts, payload=st.dictionaries(texts, json_values, max_size=4),
    metadata=st.dictionaries(texts, json_values, max_size=2), micros=st.integers(0, 10**16),
)
def test_the_store_renders_any_entry_as_the_canonical_encoder_does(
    tamper_db, genesis, tenant, stream, type_, payload, metadata, micros
):
    """The fast path hashes the entry as PostgreSQL renders it; for any content, that is the canonical entry."""
    at = dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    event_id = uuid.uuid4()
    leaf = entry_hash(
        genesis.hasher,
        entry_bytes(
            ledger_id=genesis.ledger_id, position=1, event_id=str(event_id), tenant_id=tenant, stream_id=stream,
            stream_version=1, type=type_, schema_version=1, payload=canonical_json(payload),
            metadata=canonical_json(metadata), recorded_at=format_timestamp(at),
        ),
    )
    chain = chain_link(genesis.hasher, genesis.chain_seed(), leaf)
    report = verify_tampered(
        tamper_db,
        (1 << 15, 64),
        ("DELETE FROM ledger.events", ()),
        ("DELETE FROM ledger.merkle_nodes", ()),
        ("DELETE FROM ledger.heads", ()),
        ("DELETE FROM ledger.checkpoints", ()),
        (
            "INSERT INTO ledger.events (position, event_id, tenant_id, stream_id, stream_version, type, schema_version,"
            " payload, metadata, recorded_at, prev_hash, entry_hash, chain_hash)"
            " VALUES (1, %s, %s, %s, 1, %s, 1, %s, %s, %s, %s, %s, %s)",
            (
                event_id, tenant, stream, type_, canonical_json(payload).decode(), canonical_json(metadata).decode(),
                at, genesis.chain_seed(), leaf, chain,
            ),
        ),
        (
            "INSERT INTO ledger.heads (size, root, chain_head, frontier, committed_at) VALUES (1, %s, %s, %s, now())",
            (leaf, chain, leaf),
        ),
    )
    assert report.ok, str(report.fault)
    assert report.precise_rows == 0
