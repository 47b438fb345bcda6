"""eventsourcing Applications persist through the hash-chained ledger.

The library's own contract test classes run unchanged against our recorders; the tests after them say
what the bridge adds (tenants, correlation metadata, readable payloads) and where it differs.
"""

from __future__ import annotations

import base64
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, NotSupportedError, StoredEvent
from eventsourcing.tests import persistence as contract

from adapters.postgres.eventsourcing_recorder import (
    LedgerAggregateRecorder,
    LedgerApplicationRecorder,
    ledger_metadata,
    type_name_for,
)
from adapters.postgres.ledger_store import PostgresLedger
from domain.ledger import LedgerUnavailable, NewEvent
from domain.verify import verify_rows

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

# --- the library's contract, run against our recorders ------------------------------------------------------

try:  # eventsourcing's contract module imports pycryptodome, its "crypto" extra (a dev dependency of ours)
    from eventsourcing.tests import persistence as contract
except ModuleNotFoundError as missing:  # pragma: no cover
    contract = None
    missing_for_contract = str(missing)


class _OnTheLedger:
    """Gives each contract test a fresh migrated database with a ledger genesis (conftest's `database`)."""

    ledger: PostgresLedger

    @pytest.fixture(autouse=True)
    def _open_ledger(self, database: TestDatabase):
        with PostgresLedger(database.app_url) as ledger:
            self.ledger = ledger
            yield


if contract is not None:

    class TestLedgerApplicationRecorderContract(
        _OnTheLedger, contract.ApplicationRecorderTestCase[LedgerApplicationRecorder]
    ):
        def create_recorder(self) -> LedgerApplicationRecorder:
            return LedgerApplicationRecorder(self.ledger, "Contract", tenant_id="acme")

        def test_insert_subscribe(self) -> None:
            # Optional in the library; eventsourcing's own PostgreSQL recorder runs it, so we do too.
            self.optional_test_insert_subscribe()

    class TestLedgerAggregateRecorderContract(_OnTheLedger, contract.AggregateRecorderTestCase):
        def create_recorder(self) -> LedgerAggregateRecorder:
            return LedgerAggregateRecorder(self.ledger, "Contract.snapshots", tenant_id="acme")

    class TestTextOriginatorIdsContract(
        _OnTheLedger, contract.ApplicationRecorderTestCase[LedgerApplicationRecorder]
    ):
        def new_originator_id(self) -> str:
            return "account-" + str(uuid4())

        def create_recorder(self) -> LedgerApplicationRecorder:
            return LedgerApplicationRecorder(self.ledger, "Contract", tenant_id="acme", originator_id_type="text")

        # These do not depend on the id type and take seconds; the UUID class above runs them.
        test_concurrent_no_conflicts = None  # type: ignore[assignment]
        test_concurrent_throughput = None  # type: ignore[assignment]
        test_performance = None  # type: ignore[assignment]

else:  # pragma: no cover

    def test_eventsourcing_contract_tests_are_installed():
        pytest.skip(f"eventsourcing's contract tests need pycryptodome: {missing_for_contract}")


# --- an Application with an Aggregate, end to end ------------------------------------------------------------


class BankAccount(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = Decimal("0.00")

    @event("Deposited")
    def deposit(self, amount: Decimal) -> None:
        self.balance += amount


class BankAccounts(Application[UUID]):
    def open_account(self, owner: str) -> UUID:
        account = BankAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: Decimal) -> None:
        account: BankAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)

    def balance(self, account_id: UUID) -> Decimal:
        account: BankAccount = self.repository.get(account_id)
        return account.balance


def bank(database: TestDatabase, tenant: str = "acme", **env: str) -> BankAccounts:
    return BankAccounts(
        env={
            "PERSISTENCE_MODULE": "adapters.postgres.eventsourcing_recorder",
            "NEXUS_APP_DATABASE_URL": database.app_url,
            "NEXUS_TENANT_ID": tenant,
            **env,
        }
    )


def test_an_account_saved_through_the_ledger_reloads_and_the_chain_verifies(database: TestDatabase, ledger: PostgresLedger):
    with bank(database) as app, ledger_metadata(correlation_id="req-1"):
        account_id = app.open_account("Ada")
        app.deposit(account_id, Decimal("25.00"))

    with bank(database) as fresh:  # a new process: nothing cached
        assert fresh.balance(account_id) == Decimal("25.00")

    rows = ledger.read()
    assert [(r.stream_id, r.stream_version, r.type, r.tenant_id) for r in rows] == [
        (f"es:BankAccounts:acme:{account_id}", 1, "BankAccountOpened", "acme"),
        (f"es:BankAccounts:acme:{account_id}", 2, "BankAccountDeposited", "acme"),
    ]
    deposited = orjson.loads(rows[1].payload)
    assert deposited["amount"] == {"_type_": "decimal_str", "_data_": "25.00"}  # readable JSON, not base64
    metadata = orjson.loads(rows[1].metadata)
    assert metadata["correlation_id"] == "req-1"
    assert metadata["eventsourcing"] == {
        "topic": f"{__name__}:BankAccount.Deposited",
        "originator_version": 2,
        "state": "json",
    }
    assert verify_rows(ledger.genesis(), ledger.iter_entries(), []).size == 2


def test_saving_a_stale_aggregate_is_the_librarys_integrity_error(database: TestDatabase):
    with bank(database) as first, bank(database) as second:
        account_id = first.open_account("Ada")
        mine: BankAccount = first.repository.get(account_id)
        theirs: BankAccount = second.repository.get(account_id)
        theirs.deposit(Decimal("1.00"))
        second.save(theirs)
        mine.deposit(Decimal("2.00"))
        with pytest.raises(IntegrityError):
            first.save(mine)
        assert first.balance(account_id) == Decimal("1.00")


def test_notification_ids_are_ledger_positions_and_skip_other_entries(database: TestDatabase, ledger: PostgresLedger):
    with bank(database) as app:
        first = app.open_account("Ada")
        ledger.append([NewEvent("inference-r1", "InferenceRequested", {"request_id": "r1"}, tenant_id="acme")])
        with bank(database, tenant="globex") as other_tenant:
            other_tenant.open_account("Grace")
        second = app.open_account("Alan")

        notifications = app.recorder.select_notifications(start=None, limit=10)
        assert [(n.id, n.originator_id) for n in notifications] == [(1, first), (4, second)]
        assert app.recorder.max_notification_id() == 4


def test_tenants_do_not_see_each_others_aggregates(database: TestDatabase):
    with bank(database, tenant="acme") as acme, bank(database, tenant="globex") as globex:
        account_id = acme.open_account("Ada")
        assert globex.recorder.select_events(account_id) == []
        assert globex.recorder.max_notification_id() is None


def test_encrypted_or_compressed_state_is_kept_as_base64_and_round_trips(database: TestDatabase, ledger: PostgresLedger):
    with bank(database, COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor") as app:
        account_id = app.open_account("Ada")
        assert app.balance(account_id) == Decimal("0.00")

    (row,) = ledger.read()
    assert orjson.loads(row.metadata)["eventsourcing"]["state"] == "base64"
    state = zlib.decompress(base64.b64decode(orjson.loads(row.payload)["base64"]))
    assert orjson.loads(state)["owner"] == "Ada"


def test_snapshots_are_ledger_entries_in_their_own_namespace(database: TestDatabase, ledger: PostgresLedger):
    with bank(database, IS_SNAPSHOTTING_ENABLED="y") as app:
        account_id = app.open_account("Ada")
        app.deposit(account_id, Decimal("5.00"))
        app.take_snapshot(account_id)
        app.deposit(account_id, Decimal("1.00"))
        assert app.balance(account_id) == Decimal("6.00")

    snapshot_stream = f"es:BankAccounts.snapshots:acme:{account_id}"
    assert [(r.type, r.stream_version) for r in ledger.read_stream(snapshot_stream)] == [("Snapshot", 1)]
    assert verify_rows(ledger.genesis(), ledger.iter_entries(), []).size == 4


def test_a_version_lower_than_the_last_recorded_one_is_refused_even_if_never_used(ledger: PostgresLedger):
    # The one place our rule is stricter than eventsourcing's unique constraint: the ledger numbers a
    # stream itself, so originator versions must increase; filling a gap below the last one is refused.
    recorder = LedgerApplicationRecorder(ledger, "Gaps")
    originator_id = uuid4()
    recorder.insert_events([StoredEvent(originator_id, 5, "topic", b"five")])
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(originator_id, 3, "topic", b"three")])
    recorder.insert_events([StoredEvent(originator_id, 9, "topic", b"nine")])  # gaps above are fine
    assert [e.originator_version for e in recorder.select_events(originator_id)] == [5, 9]


def test_racing_writers_of_the_same_version_record_it_exactly_once(ledger: PostgresLedger):
    recorder = LedgerApplicationRecorder(ledger, "Race")
    originator_id = uuid4()
    writers = 6

    for version in range(1, 6):
        start = threading.Barrier(writers)

        def write(writer: int, version: int = version, start: threading.Barrier = start) -> bool:
            start.wait()
            try:
                recorder.insert_events([StoredEvent(originator_id, version, "topic", f"writer {writer}".encode())])
            except IntegrityError:
                return False
            return True

        with ThreadPoolExecutor(writers) as pool:
            outcomes = list(pool.map(write, range(writers)))
        assert outcomes.count(True) == 1

    assert [e.originator_version for e in recorder.select_events(originator_id)] == [1, 2, 3, 4, 5]
    assert verify_rows(ledger.genesis(), ledger.iter_entries(), []).size == 5


class AcknowledgementLost(PostgresLedger):
    """The real ledger, whose first append commits but reports LedgerUnavailable, as a dropped connection would."""

    failed = False

    def append(self, events, expected_versions=None):
        receipts = super().append(events, expected_versions)
        if not self.failed:
            self.failed = True
            raise LedgerUnavailable("connection lost after commit")
        return receipts


def test_a_lost_acknowledgement_is_retried_without_recording_twice(database: TestDatabase):
    with AcknowledgementLost(database.app_url) as ledger:
        recorder = LedgerApplicationRecorder(ledger, "Retry")
        originator_id = uuid4()
        ids = recorder.insert_events([StoredEvent(originator_id, 1, "topic", b"once")])
        assert ids == [1]
        assert ledger.head().size == 1


def test_process_applications_are_not_supported(database: TestDatabase):
    with bank(database) as app, pytest.raises(NotSupportedError):
        app.factory.process_recorder()


@pytest.mark.parametrize(
    "topic, type_name",
    [
        ("bank.domain:Account.Opened", "AccountOpened"),
        ("bank.events:Deposited", "Deposited"),
        ("tests.x:test_it.<locals>.Account.Closed", "AccountClosed"),
        ("topic1", "Topic1"),
        ("bank:snake_case_event", "SnakeCaseEvent"),
        ("bank:_private.1st", "Private1st"),
        ("bank:1st", "Event1st"),
    ],
)
def test_the_ledger_type_is_derived_from_the_topic(topic: str, type_name: str):
    assert type_name_for(topic) == type_name
