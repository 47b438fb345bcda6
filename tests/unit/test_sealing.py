"""Sealed envelopes and wrapped data keys (domain/sealing.py), checked without a database."""

from __future__ import annotations

import base64
import json

import pytest
from Crypto.Cipher import AES  # pycryptodome: an AES-GCM independent of `cryptography`
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import sealing
from domain.canonical import canonical_json
from domain.sealing import (
    ENC,
    DataKey,
    DataKeyUnwrapFailed,
    EnvelopeInvalid,
    InvalidSubjectId,
    MasterKey,
    MasterKeyInvalid,
    new_data_key,
    open_with,
    parse_envelope,
    seal_with,
    unwrap_data_key,
    wrap_data_key,
)

KEY = DataKey("acme", "user-42", "0123456789abcdef0123456789abcdef", bytes(range(32)))
NONCE = bytes.fromhex("000102030405060708090a0b")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def opened(envelope: dict, tenant: str = "acme", key: DataKey = KEY):
    return open_with(key, tenant, parse_envelope(envelope))


def with_ct(envelope: dict, ct: bytes) -> dict:
    return {**envelope, "ct": base64.b64encode(ct).decode()}


# --- the envelope -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_any_json_value_seals_and_opens_unchanged(value):
    assert opened(seal_with(KEY, value)) == value


def test_an_envelope_is_a_small_json_object_naming_scheme_subject_and_key_and_nothing_else():
    envelope = seal_with(KEY, "my card number is 4111 1111 1111 1111")
    assert set(envelope) == {"enc", "subject", "kid", "nonce", "ct"}
    assert envelope["enc"] == ENC == "aes-256-gcm/v1"
    assert envelope["subject"] == "user-42" and envelope["kid"] == KEY.kid
    assert len(base64.b64decode(envelope["nonce"])) == 12
    assert json.loads(json.dumps(envelope)) == envelope
    assert b"4111" not in canonical_json(envelope)
    assert sealing.is_sealed(envelope) and not sealing.is_sealed({**envelope, "extra": 1})
    assert not sealing.is_sealed("text") and not sealing.is_sealed({"redacted": True})


def test_every_seal_draws_a_fresh_nonce_so_equal_content_never_looks_equal():
    first, second = seal_with(KEY, "same"), seal_with(KEY, "same")
    assert first["nonce"] != second["nonce"] and first["ct"] != second["ct"]


def test_an_independent_aes_gcm_opens_an_envelope_from_the_documented_associated_data():
    envelope = seal_with(KEY, {"prompt": "Grüezi"}, nonce=NONCE)
    ad = b"nexus-sealed/v1\x00" + b'{"kid":"0123456789abcdef0123456789abcdef","subject":"user-42","tenant":"acme"}'
    raw = base64.b64decode(envelope["ct"])
    cipher = AES.new(KEY.secret, AES.MODE_GCM, nonce=NONCE)
    cipher.update(ad)
    plaintext = cipher.decrypt_and_verify(raw[:-16], raw[-16:])
    assert plaintext == '{"prompt":"Grüezi"}'.encode()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_changing_any_bit_of_the_ciphertext_or_nonce_is_detected(data):
    envelope = seal_with(KEY, "the patient's diagnosis")
    member = data.draw(st.sampled_from(["ct", "nonce"]))
    raw = bytearray(base64.b64decode(envelope[member]))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(EnvelopeInvalid, match="authentication failed"):
        opened({**envelope, member: base64.b64encode(bytes(raw)).decode()})


def test_a_ciphertext_moved_to_another_subject_or_tenant_fails_even_under_the_same_key_bytes():
    envelope = seal_with(KEY, "private")
    other_tenant = DataKey("globex", KEY.subject_id, KEY.kid, KEY.secret)
    with pytest.raises(EnvelopeInvalid, match="authentication failed"):
        opened(envelope, tenant="globex", key=other_tenant)
    other_subject = DataKey("acme", "user-43", KEY.kid, KEY.secret)
    with pytest.raises(EnvelopeInvalid, match="authentication failed"):
        opened({**envelope, "subject": "user-43"}, key=other_subject)
    other_kid = DataKey("acme", "user-42", "f" * 32, KEY.secret)
    with pytest.raises(EnvelopeInvalid, match="authentication failed"):
        opened({**envelope, "kid": "f" * 32}, key=other_kid)


def test_opening_with_a_key_of_another_subject_is_refused_before_decrypting():
    with pytest.raises(EnvelopeInvalid, match="the key offered is"):
        opened(seal_with(KEY, "x"), key=new_data_key("acme", "user-42"))


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda e: {k: v for k, v in e.items() if k != "kid"}, "expected members"),
        (lambda e: {**e, "extra": "x"}, "expected members"),
        (lambda e: {**e, "enc": "aes-128-cbc"}, "unsupported scheme"),
        (lambda e: {**e, "kid": "K"}, "kid"),
        (lambda e: {**e, "subject": "a b"}, "subject"),
        (lambda e: {**e, "nonce": "***"}, "nonce is not valid base64"),
        (lambda e: {**e, "nonce": base64.b64encode(b"short").decode()}, "nonce has 5 bytes"),
        (lambda e: {**e, "ct": 42}, "ct must be a base64 string"),
        (lambda e: with_ct(e, b"tiny"), "shorter than the 16-byte tag"),
        (lambda e: ["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_a_malformed_envelope_says_what_is_wrong(change, problem):
    with pytest.raises(EnvelopeInvalid, match=problem):
        parse_envelope(change(seal_with(KEY, "x")))


def test_subject_ids_are_opaque_tokens():
    for good in ("user-42", "c_9", "9f86d081", "ns:cust.17"):
        assert sealing.validate_subject_id(good) == good
    for bad in ("", "-lead", "a/b", "with space", "x" * 129, 42, "alice@example.com"):
        with pytest.raises(InvalidSubjectId):
            sealing.validate_subject_id(bad)


# --- data keys under the master key ---------------------------------------------------------------


def test_a_data_key_unwraps_only_under_its_master_key_and_for_its_own_row():
    master = MasterKey.generate()
    key = new_data_key("acme", "user-42")
    wrapped = wrap_data_key(master, key)
    assert len(wrapped) == sealing.WRAPPED_BYTES == 60
    assert unwrap_data_key(master, "acme", "user-42", key.kid, wrapped, master.kid) == key
    with pytest.raises(DataKeyUnwrapFailed, match="wrapped under master key"):
        unwrap_data_key(MasterKey.generate(), "acme", "user-42", key.kid, wrapped, master.kid)
    with pytest.raises(DataKeyUnwrapFailed, match="does not authenticate"):
        unwrap_data_key(master, "acme", "user-43", key.kid, wrapped, master.kid)  # a row moved to another subject


def test_master_keys_are_read_from_hex_or_base64_and_never_shown():
    secret = bytes(range(32))
    for text in (secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
                 base64.urlsafe_b64encode(secret).decode().rstrip("=")):
        assert MasterKey.from_text(f" {text}\n").secret == secret
    for bad in ("abc", secret.hex()[:-2], base64.b64encode(secret[:16]).decode(), "not base64!"):
        with pytest.raises(MasterKeyInvalid):
            MasterKey.from_text(bad)
    master = MasterKey(secret)
    assert secret.hex() not in repr(master) and len(master.kid) == 16
    assert KEY.secret.hex() not in repr(KEY) and "secret" not in repr(KEY)


# --- the content-storage switch -------------------------------------------------------------------


def test_content_is_stored_unless_the_latest_policy_change_switched_it_off():
    created = ("TenantCreated", {"tenant_id": "acme"})
    off = (sealing.CONTENT_STORAGE_POLICY_CHANGED, {"tenant_id": "acme", "content_storage": False})
    on = (sealing.CONTENT_STORAGE_POLICY_CHANGED, {"tenant_id": "acme", "content_storage": True})
    assert sealing.content_storage_enabled([]) is True
    assert sealing.content_storage_enabled([created]) is True
    assert sealing.content_storage_enabled([created, off]) is False
    assert sealing.content_storage_enabled([created, off, on]) is True
    assert sealing.is_redacted({"redacted": True}) and not sealing.is_redacted(seal_with(KEY, "x"))
