"""Any single change to an entry, a proof or a checkpoint of a valid audit bundle makes verification fail.

Bundles are exported once from a real PostgreSQL ledger (two tenants writing in turn, checkpoints along
the way); each example mutates a copy in memory and hands it to the offline verifier, which must raise a
BundleInvalid (and never any other exception).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.keystore import FileKeyStore
from adapters.postgres.checkpoint_store import PostgresCheckpointStore
from adapters.postgres.ledger_store import PostgresLedger
from application.audit_export import ExportRequest, export_bundle
from application.signer import CheckpointSigner
from domain.audit import BundleInvalid, bundle_from_json, bundle_to_json, dump_bundle, load_bundle, verify_bundle
from domain.ledger import NewEvent
from tests.conftest import drop_database, make_database

KINDS = ("range", "stream", "tenant", "whole")
HEX_FIELDS = {"prev_hash", "entry_hash", "chain_hash", "root", "chain_head", "signature", "public_key"}
EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(scope="module")
def bundles(server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """Valid bundles of each kind, as parsed JSON, built once for the whole module."""
    database = make_database(server_url, template_db)
    try:
        with PostgresLedger(database.app_url) as ledger:
            store = PostgresCheckpointStore(database.app_url)
            signer = CheckpointSigner(ledger, FileKeyStore(Path(tmp_path_factory.mktemp("keys"))), store)
            for i in range(40):
                tenant = ("acme", "globex")[i % 2]
                ledger.append([NewEvent(f"{tenant}-{i % 3}", "OrderPlaced", {"n": i, "text": f"ünïcode {i}", "x": i / 4},
                                        tenant_id=tenant, metadata={"by": "test"})])
                if i % 9 == 8:
                    signer.sign_now()
            requests = {
                "range": ExportRequest(from_position=7, to_position=33),
                "stream": ExportRequest(stream_id="acme-2"),
                "tenant": ExportRequest(tenant_id="globex", from_position=3),
                "whole": ExportRequest(),
            }
            built = {kind: bundle_to_json(export_bundle(ledger, store, signer, r)) for kind, r in requests.items()}
    finally:
        drop_database(server_url, database.name)
    for data in built.values():
        verify_bundle(bundle_from_json(data))  # the starting point is valid
    yield built


def verify(data: dict[str, Any]) -> None:
    verify_bundle(bundle_from_json(data))


def changed(value: Any, draw: st.DrawFn, name: str) -> Any:
    """A different value of the same kind: one flipped bit of a hash, one replaced character, another integer."""
    if isinstance(value, str) and name in HEX_FIELDS | {"hash"} and value:
        raw = bytearray(bytes.fromhex(value))
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << draw(st.integers(0, 7))
        return raw.hex()
    if isinstance(value, str):
        if not value:
            return draw(st.text(min_size=1, max_size=3))
        i = draw(st.integers(0, len(value) - 1))
        other = draw(st.characters().filter(lambda c: c != value[i]))
        return value[:i] + other + value[i + 1 :]
    if isinstance(value, bool) or value is None:
        return draw(st.integers())
    if isinstance(value, int):
        return value + draw(st.integers(-(2**20), 2**20).filter(bool))
    raise AssertionError(f"unexpected value {value!r}")


@st.composite
def entry_field_change(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    mutated = copy.deepcopy(data)
    entry = draw(st.sampled_from(mutated["entries"]))
    name = draw(st.sampled_from(sorted(k for k in entry if k != "inclusion_proof")))
    entry[name] = changed(entry[name], draw, name)
    return mutated


@st.composite
def proof_change(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """One hash of one inclusion or consistency proof flipped, dropped, duplicated, or swapped with another."""
    mutated = copy.deepcopy(data)
    holders = [e["inclusion_proof"] for e in mutated["entries"]] + [c["proof"] for c in mutated["consistency"]]
    proof = draw(st.sampled_from([p for p in holders if p]))
    i = draw(st.integers(0, len(proof) - 1))
    how = draw(st.sampled_from(["flip", "drop", "duplicate", "swap", "append"]))
    if how == "flip":
        proof[i] = changed(proof[i], draw, "hash")
    elif how == "drop":
        del proof[i]
    elif how == "duplicate":
        proof.insert(i, proof[i])
    elif how == "append":
        proof.append(draw(st.binary(min_size=32, max_size=32)).hex())
    else:
        j = draw(st.integers(0, len(proof) - 1).filter(lambda j: proof[j] != proof[i]))
        proof[i], proof[j] = proof[j], proof[i]
    return mutated


@st.composite
def checkpoint_change(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """One field of the bundle's checkpoint, an earlier checkpoint, a public key, or the genesis identity."""
    mutated = copy.deepcopy(data)
    targets = [mutated["checkpoint"]] + [c["checkpoint"] for c in mutated["consistency"]] + mutated["public_keys"]
    target = draw(st.sampled_from(targets))
    name = draw(st.sampled_from(sorted(target)))
    target[name] = changed(target[name], draw, name)
    return mutated


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def any_value_anywhere_in_an_entry(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    mutated = copy.deepcopy(data)
    entry = draw(st.sampled_from(mutated["entries"]))
    name = draw(st.sampled_from(sorted(entry)))
    original = json.dumps(entry[name])
    if draw(st.booleans()):
        del entry[name]
    else:
        entry[name] = draw(json_values.filter(lambda v: json.dumps(v) != original))
    return mutated


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(data=st.data())
def test_any_changed_field_of_any_entry_is_caught(bundles, kind, data):
    with pytest.raises(BundleInvalid):
        verify(data.draw(entry_field_change(bundles[kind])))


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(data=st.data())
def test_any_changed_hash_in_any_proof_is_caught(bundles, kind, data):
    with pytest.raises(BundleInvalid):
        verify(data.draw(proof_change(bundles[kind])))


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(data=st.data())
def test_any_changed_field_of_a_checkpoint_or_key_is_caught(bundles, kind, data):
    with pytest.raises(BundleInvalid):
        verify(data.draw(checkpoint_change(bundles[kind])))


@pytest.mark.parametrize("kind", ["range", "tenant"])
@EXAMPLES
@given(data=st.data())
def test_any_value_of_any_type_in_an_entry_is_refused_with_a_typed_error(bundles, kind, data):
    with pytest.raises(BundleInvalid):
        verify(data.draw(any_value_anywhere_in_an_entry(bundles[kind])))


@pytest.mark.parametrize("kind", ["range", "tenant"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_flipped_byte_anywhere_in_the_file_is_caught_or_changes_nothing_that_is_proved(bundles, kind, data):
    original = bundles[kind]
    raw = bytearray(dump_bundle(bundle_from_json(original)))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    try:
        survivor = load_bundle(bytes(raw))
        result = verify_bundle(survivor)
    except BundleInvalid:
        return
    # Only what the bundle does not prove may change undetected: the export time, whitespace, and the
    # genesis record's creation time when the bundle does not hold the chain from position 1 (the
    # verifier says so in its report).
    assert unproved(bundle_to_json(survivor), result.genesis_proved) == unproved(original, result.genesis_proved)


def unproved(data: dict[str, Any], genesis_proved: bool) -> dict[str, Any]:
    blanked = {**data, "exported_at": ""}
    if not genesis_proved:
        blanked["genesis"] = {**data["genesis"], "created_at": ""}
    return blanked
