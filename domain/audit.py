"""Audit bundles: one JSON file that proves a selection of ledger entries, checked fully offline.

A bundle holds the ledger's genesis record, the selected entries with every column their hashes are
computed from, an RFC 9162 inclusion proof for each entry against one Ed25519-signed checkpoint,
consistency proofs from earlier checkpoints to that one, and the public keys. docs/audit-bundle.md is
the prose; this module is the reference reader and verifier.

It is self-contained on purpose: besides the standard library it uses only blake3 (through
domain.hashing), cryptography (Ed25519) and the proof checks of domain.merkle, so a compliance team can
read it in one sitting and run it with nothing else installed. That is also why it encodes entries and
checkpoints itself instead of importing domain.entry and domain.checkpoint (which pull in orjson): the
bytes are the same, and the tests prove it against real ledgers and the golden vectors.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.hashing import GENESIS_PREFIX, HASHERS, LEAF_PREFIX, NODE_PREFIX, Hasher
from domain.merkle import ProofError, RootMismatch, verify_consistency, verify_inclusion

FORMAT = "nexus-audit-bundle/v1"
LEDGER_FORMAT = 1
CHECKPOINT_TYPE = "nexus-checkpoint/v1"
MAX_SAFE_INTEGER = 2**53 - 1
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")


# --- errors: one line each, saying where, what, and what was expected and computed -----------------


class BundleInvalid(Exception):
    """Anything wrong with a bundle. `str()` is one line: position, problem, expected and computed."""

    def __init__(
        self,
        problem: str,
        *,
        position: int | None = None,
        expected: str | None = None,
        computed: str | None = None,
        computed_label: str = "computed",
    ) -> None:
        text = problem if position is None else f"position {position}: {problem}"
        if expected is not None or computed is not None:
            text += f": expected {expected}, {computed_label} {computed}"
        # Values come from the file: escape control characters so the report stays on one line.
        super().__init__("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text))
        self.problem = problem
        self.position = position
        self.expected = expected
        self.computed = computed


class BundleMalformed(BundleInvalid):
    """Not a well-formed bundle: a member missing or of the wrong type, bad hex, no entries."""


class BundleTruncated(BundleMalformed):
    """The JSON text ends before the bundle does."""


class BundleNotJson(BundleMalformed):
    """The file is not UTF-8 JSON at all."""


class UnsupportedFormat(BundleInvalid):
    """A bundle or ledger format version this verifier does not know."""


class UnsupportedHashAlgorithm(BundleInvalid):
    """A hash algorithm other than the ledger's blake3 and sha256."""


class IdentityMismatch(BundleInvalid):
    """A checkpoint of another ledger, or with another hash algorithm, than the genesis record says."""


class KeyInvalid(BundleInvalid):
    """A public key that does not match its key id, or a checkpoint whose key is not in the bundle."""


class UntrustedKey(BundleInvalid):
    """The checkpoint is signed by a key other than the one(s) the reader trusts."""


class SignatureInvalid(BundleInvalid):
    """A checkpoint's Ed25519 signature does not verify."""


class ConsistencyProofInvalid(BundleInvalid):
    """An earlier checkpoint's tree is not shown to be a prefix of the bundle's checkpoint tree."""


class EntryHashMismatch(BundleInvalid):
    """An entry's content does not hash to the entry hash the bundle records for it."""


class ChainLinkMismatch(BundleInvalid):
    """An entry's chain hash, back link, or link to the genesis or checkpoint chain head is wrong."""


class InclusionProofInvalid(BundleInvalid):
    """An entry's inclusion proof does not lead to the checkpoint's root."""


class SelectionViolated(BundleInvalid):
    """The entries are not what the bundle's selection says: wrong tenant or stream, missing, out of order."""


class TrustedKeyInvalid(ValueError):
    """A --trusted-key that is neither 64 hex digits nor an Ed25519 public key in PEM."""


# --- the bundle as data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenesisRecord:
    ledger_id: str
    hash_alg: str
    created_at: str
    format: int

    def chain_seed(self, hasher: Hasher) -> bytes:
        """chain_0 = H(0x02 || JCS(genesis)): what the entry at position 1 links back to."""
        members = {"created_at": self.created_at, "format": self.format, "hash_alg": self.hash_alg, "ledger_id": self.ledger_id}
        return hasher.digest(GENESIS_PREFIX + _jcs_object(members))


@dataclass(frozen=True)
class SignedCheckpoint:
    ledger_id: str
    hash_alg: str
    tree_size: int
    root: bytes
    chain_head: bytes
    signed_at: str
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        """The signed bytes: JCS of the checkpoint with hashes in lowercase hex (docs/ledger-format.md)."""
        members = {
            "chain_head": self.chain_head.hex(), "hash_alg": self.hash_alg, "key_id": self.key_id,
            "ledger_id": self.ledger_id, "root": self.root.hex(), "signed_at": self.signed_at,
            "tree_size": self.tree_size, "type": CHECKPOINT_TYPE,
        }
        return _jcs_object(members)


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    public_key: bytes


@dataclass(frozen=True)
class BundleEntry:
    """One ledger row. `payload` and `metadata` are the canonical JSON text exactly as hashed."""

    position: int
    event_id: str
    tenant_id: str
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    payload: str
    metadata: str
    recorded_at: str
    prev_hash: bytes
    entry_hash: bytes
    chain_hash: bytes
    inclusion_proof: tuple[bytes, ...]

    def canonical(self, ledger_id: str) -> bytes:
        """The entry's RFC 8785 bytes (docs/ledger-format.md, "Entry"); payload and metadata spliced verbatim."""
        try:
            members = {
                "event_id": self.event_id, "format": LEDGER_FORMAT, "ledger_id": ledger_id,
                "metadata": _Raw(self.metadata.encode()), "payload": _Raw(self.payload.encode()),
                "position": self.position, "recorded_at": self.recorded_at,
                "schema_version": self.schema_version, "stream_id": self.stream_id,
                "stream_version": self.stream_version, "tenant_id": self.tenant_id, "type": self.type,
            }
            return _jcs_object(members)
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8, so no canonical form
            raise BundleMalformed("text that is not valid Unicode", position=self.position) from None


@dataclass(frozen=True)
class ConsistencyProof:
    checkpoint: SignedCheckpoint
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Selection:
    """What was asked for: positions from..to (inclusive), optionally only one stream and/or one tenant."""

    from_position: int
    to_position: int
    stream_id: str | None = None
    tenant_id: str | None = None

    def describe(self) -> str:
        parts = [f"positions {self.from_position}..{self.to_position}"]
        if self.stream_id is not None:
            parts.append(f"stream {self.stream_id}")
        if self.tenant_id is not None:
            parts.append(f"tenant {self.tenant_id}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Bundle:
    genesis: GenesisRecord
    selection: Selection
    checkpoint: SignedCheckpoint
    public_keys: tuple[PublicKey, ...]
    entries: tuple[BundleEntry, ...]
    consistency: tuple[ConsistencyProof, ...]
    exported_at: str = ""


# --- canonical JSON for the flat objects above: strings, integers and pre-encoded JSON -------------


@dataclass(frozen=True)
class _Raw:
    """JSON text that is already canonical (payload, metadata): spliced in as it is."""

    text: bytes


def _jcs_object(members: Mapping[str, str | int | _Raw]) -> bytes:
    """RFC 8785 for an object with ASCII member names (so code-point order is UTF-16 order)."""
    parts = []
    for name in sorted(members):
        value = members[name]
        if isinstance(value, _Raw):
            encoded = value.text
        elif isinstance(value, int):
            encoded = str(value).encode()
        else:
            # With ensure_ascii off, json.dumps escapes exactly what RFC 8785 escapes: `"`, `\`,
            # \b \f \n \r \t, and other controls as lowercase \u00xx; all else is verbatim.
            encoded = json.dumps(value, ensure_ascii=False).encode("utf-8")
        parts.append(b'"' + name.encode() + b'":' + encoded)
    return b"{" + b",".join(parts) + b"}"


def key_id_for(public_key: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


# --- reading: bytes -> Bundle, with a typed error for every way a file can be wrong --------------------


def load_bundle(raw: bytes) -> Bundle:
    """Parse a bundle file. Raises BundleNotJson, BundleTruncated, UnsupportedFormat, BundleMalformed..."""
    if not raw.strip():
        raise BundleTruncated("the bundle file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data":  # cut inside a multi-byte character
            raise BundleTruncated(f"the text ends early, inside a character, after {len(raw)} bytes (truncated?)") from None
        raise BundleNotJson(f"not a JSON text: byte {err.start} is not UTF-8") from None
    try:
        data = _strict_json(text)
    except _DuplicateMember as err:
        raise BundleMalformed(str(err)) from None
    except json.JSONDecodeError as err:
        # The decoder stops at the end of the text, or cannot close a string, only if the text was cut short.
        if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string"):
            raise BundleTruncated(f"the JSON text ends early, after {len(raw)} bytes (truncated?)") from None
        raise BundleNotJson(f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # e.g. integers with thousands of digits, absurd nesting
        raise BundleNotJson(f"not valid JSON: {err}") from None
    return bundle_from_json(data)


class _DuplicateMember(ValueError):
    pass


def _strict_json(text: str) -> Any:
    """json.loads without the leniencies that would let two readers see different bundles: duplicate
    member names (parsers differ on which one wins, so a viewer could show what was not verified) and
    NaN / Infinity (not JSON at all)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for name, value in pairs:
            if name in obj:
                raise _DuplicateMember(f"member {name!r:.40} appears twice in one object")
            obj[name] = value
        return obj

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)


def bundle_from_json(data: Any) -> Bundle:
    """The Bundle in a parsed JSON value. Checks the format first, then every member's presence and type."""
    if not isinstance(data, dict) or "format" not in data:
        raise BundleMalformed("not a nexus audit bundle: no top-level 'format' member")
    if data["format"] != FORMAT:
        raise UnsupportedFormat(f"unknown bundle format {data['format']!r:.60}; this verifier reads {FORMAT!r}")
    g = _object(data, "genesis", "bundle")
    genesis = GenesisRecord(
        _str(g, "ledger_id", "genesis"), _str(g, "hash_alg", "genesis"), _str(g, "created_at", "genesis"),
        _int(g, "format", "genesis"),
    )
    _hasher_for(genesis)  # an unknown algorithm or ledger format is named before anything else
    s = _object(data, "selection", "bundle")
    selection = Selection(
        _int(s, "from_position", "selection"), _int(s, "to_position", "selection"),
        _optional_str(s, "stream_id", "selection"), _optional_str(s, "tenant_id", "selection"),
    )
    keys = []
    for where, k in _objects(data, "public_keys"):
        if _str(k, "algorithm", where) != "ed25519":
            raise KeyInvalid(f"{where}: unknown signature algorithm {k['algorithm']!r:.40}; expected 'ed25519'")
        keys.append(PublicKey(_str(k, "key_id", where), _hex(k, "public_key", where)))
    consistency = tuple(
        ConsistencyProof(_checkpoint(_object(c, "checkpoint", where), f"{where}.checkpoint"), _hashes(c, "proof", where))
        for where, c in _objects(data, "consistency")
    )
    exported_at = data.get("exported_at", "")
    return Bundle(
        genesis=genesis,
        selection=selection,
        checkpoint=_checkpoint(_object(data, "checkpoint", "bundle"), "checkpoint"),
        public_keys=tuple(keys),
        entries=tuple(_entry(e, where) for where, e in _objects(data, "entries")),
        consistency=consistency,
        exported_at=exported_at if isinstance(exported_at, str) else "",
    )


def _hasher_for(genesis: GenesisRecord) -> Hasher:
    if genesis.hash_alg not in HASHERS:
        raise UnsupportedHashAlgorithm(f"unknown hash algorithm {genesis.hash_alg!r:.40}; expected one of {sorted(HASHERS)}")
    if genesis.format != LEDGER_FORMAT:
        raise UnsupportedFormat(f"unknown ledger format {genesis.format}; this verifier reads format {LEDGER_FORMAT}")
    return HASHERS[genesis.hash_alg]


def _entry(e: dict[str, Any], where: str) -> BundleEntry:
    entry = BundleEntry(
        position=_int(e, "position", where), event_id=_str(e, "event_id", where),
        tenant_id=_str(e, "tenant_id", where), stream_id=_str(e, "stream_id", where),
        stream_version=_int(e, "stream_version", where), type=_str(e, "type", where),
        schema_version=_int(e, "schema_version", where), payload=_str(e, "payload", where),
        metadata=_str(e, "metadata", where), recorded_at=_str(e, "recorded_at", where),
        prev_hash=_hex(e, "prev_hash", where), entry_hash=_hex(e, "entry_hash", where),
        chain_hash=_hex(e, "chain_hash", where), inclusion_proof=_hashes(e, "inclusion_proof", where),
    )
    for name in ("payload", "metadata"):
        try:
            problem = None if isinstance(_strict_json(getattr(entry, name)), dict) else "another JSON value"
        except (ValueError, RecursionError) as err:
            problem = str(err)
        if problem is not None:
            raise BundleMalformed(f"{name} must be the text of a JSON object, found {problem}", position=entry.position)
    return entry


def _checkpoint(c: dict[str, Any], where: str) -> SignedCheckpoint:
    return SignedCheckpoint(
        ledger_id=_str(c, "ledger_id", where), hash_alg=_str(c, "hash_alg", where),
        tree_size=_int(c, "tree_size", where), root=_hex(c, "root", where),
        chain_head=_hex(c, "chain_head", where), signed_at=_str(c, "signed_at", where),
        key_id=_str(c, "key_id", where), signature=_hex(c, "signature", where),
    )


def _member(obj: dict[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise BundleMalformed(f"{where}.{name} is missing")
    return obj[name]


def _object(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = _member(obj, name, where)
    if not isinstance(value, dict):
        raise BundleMalformed(f"{where}.{name} must be a JSON object")
    return value


def _objects(obj: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    items = _member(obj, name, "bundle")
    if not isinstance(items, list):
        raise BundleMalformed(f"bundle.{name} must be a JSON array")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BundleMalformed(f"{name}[{i}] must be a JSON object")
    return [(f"{name}[{i}]", item) for i, item in enumerate(items)]


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = _member(obj, name, where)
    if not isinstance(value, str):
        raise BundleMalformed(f"{where}.{name} must be a string, found {json.dumps(value)[:40]}")
    return value


def _optional_str(obj: dict[str, Any], name: str, where: str) -> str | None:
    return None if obj.get(name) is None else _str(obj, name, where)


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = _member(obj, name, where)
    # bool is an int in Python, not in JSON; and the ledger's integers are I-JSON safe integers.
    if type(value) is not int or not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise BundleMalformed(f"{where}.{name} must be an integer within +-(2**53-1), found {json.dumps(value)[:40]}")
    return value


def _hex(obj: dict[str, Any], name: str, where: str) -> bytes:
    text = _str(obj, name, where)
    if not _LOWER_HEX.fullmatch(text):
        raise BundleMalformed(f"{where}.{name} must be lowercase hex, found {text[:40]!r}")
    return bytes.fromhex(text)


def _hashes(obj: dict[str, Any], name: str, where: str) -> tuple[bytes, ...]:
    items = _member(obj, name, where)
    if not isinstance(items, list):
        raise BundleMalformed(f"{where}.{name} must be a JSON array of hex hashes")
    hashes = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not _LOWER_HEX.fullmatch(item):
            raise BundleMalformed(f"{where}.{name}[{i}] must be a lowercase hex string, found {json.dumps(item)[:40]}")
        hashes.append(bytes.fromhex(item))
    return tuple(hashes)


# --- writing ---------------------------------------------------------------------------------------


def bundle_to_json(bundle: Bundle) -> dict[str, Any]:
    def checkpoint(c: SignedCheckpoint) -> dict[str, Any]:
        return {
            "ledger_id": c.ledger_id, "hash_alg": c.hash_alg, "tree_size": c.tree_size, "root": c.root.hex(),
            "chain_head": c.chain_head.hex(), "signed_at": c.signed_at, "key_id": c.key_id,
            "signature": c.signature.hex(),
        }

    g, s = bundle.genesis, bundle.selection
    return {
        "format": FORMAT,
        "exported_at": bundle.exported_at,
        "genesis": {"ledger_id": g.ledger_id, "hash_alg": g.hash_alg, "created_at": g.created_at, "format": g.format},
        "selection": {
            "from_position": s.from_position, "to_position": s.to_position,
            "stream_id": s.stream_id, "tenant_id": s.tenant_id,
        },
        "checkpoint": checkpoint(bundle.checkpoint),
        "public_keys": [
            {"key_id": k.key_id, "algorithm": "ed25519", "public_key": k.public_key.hex()} for k in bundle.public_keys
        ],
        "consistency": [
            {"checkpoint": checkpoint(c.checkpoint), "proof": [h.hex() for h in c.proof]} for c in bundle.consistency
        ],
        "entries": [
            {
                "position": e.position, "event_id": e.event_id, "tenant_id": e.tenant_id, "stream_id": e.stream_id,
                "stream_version": e.stream_version, "type": e.type, "schema_version": e.schema_version,
                "payload": e.payload, "metadata": e.metadata, "recorded_at": e.recorded_at,
                "prev_hash": e.prev_hash.hex(), "entry_hash": e.entry_hash.hex(), "chain_hash": e.chain_hash.hex(),
                "inclusion_proof": [h.hex() for h in e.inclusion_proof],
            }
            for e in bundle.entries
        ],
    }


def dump_bundle(bundle: Bundle) -> bytes:
    """The bundle file: UTF-8 JSON, indented so that a person can read it."""
    return json.dumps(bundle_to_json(bundle), indent=1, ensure_ascii=False).encode("utf-8") + b"\n"


# --- verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What a bundle was shown to prove."""

    selection: Selection
    entries: int
    first_position: int
    last_position: int
    tree_size: int
    root: bytes
    key_id: str
    key_trusted: bool
    consistent_with: tuple[int, ...]
    complete: bool
    """For a range or a stream: no entry of the selection can be missing (gap-free positions or versions)."""
    chain_proved_from: int | None
    """The bundle's entries run without a gap from this position to the checkpoint's tree size, so their
    chain hashes are proved by the signed chain head. None: the chain links were only checked between
    neighbours (the entries themselves are proved by their inclusion proofs either way)."""

    @property
    def genesis_proved(self) -> bool:
        """The whole chain from the genesis record to the checkpoint is in the bundle, proving the record."""
        return self.chain_proved_from == 1

    def summary(self) -> str:
        """A report for people: the first line is OK with the counts, the rest what each count rests on."""
        trust = "a trusted key" if self.key_trusted else "a key taken from the bundle, NOT independently trusted"
        sizes = ", ".join(str(s) for s in self.consistent_with) or "none included"
        completeness = "every entry of the selection is present" if self.complete else "not provable for a tenant"
        return "\n".join(
            (
                f"OK: {self.entries} entries, {len(self.consistent_with)} consistency proofs verified"
                f" ({self.selection.describe()})",
                f"  entries: positions {self.first_position}..{self.last_position}, each hash recomputed from"
                f" its content and proved included; completeness: {completeness}",
                f"  checkpoint: tree size {self.tree_size}, root {self.root.hex()}, signed by key {self.key_id}"
                f" ({trust})",
                f"  consistent with earlier checkpoints at tree sizes: {sizes}",
                f"  chain: {self._chain()}",
            )
        )

    def _chain(self) -> str:
        if self.chain_proved_from is None:
            return (
                "links checked between consecutive entries; not proved by the checkpoint's chain head (the bundle"
                " does not reach its tree size); the genesis record's created_at is not proved"
            )
        genesis = "the genesis record is proved" if self.genesis_proved else "the genesis record's created_at is not proved"
        return f"hashes of positions {self.chain_proved_from}..{self.tree_size} proved by the checkpoint's chain head; {genesis}"


def verify_bytes(raw: bytes, trusted_keys: Sequence[bytes] = ()) -> Verified:
    """Parse and verify a bundle file."""
    return verify_bundle(load_bundle(raw), trusted_keys)


def verify_bundle(bundle: Bundle, trusted_keys: Sequence[bytes] = ()) -> Verified:
    """Check everything the bundle claims; raise the first BundleInvalid found.

    With `trusted_keys`, the bundle's checkpoint must be signed by one of them; without, it is checked
    against the bundle's own key, which proves integrity but not origin (the result says so).
    """
    hasher = _hasher_for(bundle.genesis)
    keys = _checked_keys(bundle.public_keys)
    trusted = {key_id_for(k): k for k in trusted_keys}
    checkpoint = bundle.checkpoint

    _check_identity(bundle.genesis, checkpoint)
    key, key_trusted = _signing_key(checkpoint, keys, trusted, must_be_trusted=bool(trusted))
    _check_signature(checkpoint, key)
    for earlier in bundle.consistency:
        _check_consistency(hasher, bundle.genesis, earlier, checkpoint, keys, trusted)

    _check_selection_bounds(bundle.selection, checkpoint)
    if not bundle.entries:
        raise SelectionViolated(f"the bundle holds no entries for {bundle.selection.describe()}")
    seed = bundle.genesis.chain_seed(hasher)
    previous: BundleEntry | None = None
    for entry in bundle.entries:
        _check_selected(entry, previous, bundle.selection)
        _check_entry(hasher, bundle.genesis.ledger_id, entry, previous, checkpoint, seed)
        previous = entry
    complete = _check_complete(bundle.entries, bundle.selection)

    return Verified(
        selection=bundle.selection,
        entries=len(bundle.entries),
        first_position=bundle.entries[0].position,
        last_position=bundle.entries[-1].position,
        tree_size=checkpoint.tree_size,
        root=checkpoint.root,
        key_id=checkpoint.key_id,
        key_trusted=key_trusted,
        consistent_with=tuple(c.checkpoint.tree_size for c in bundle.consistency),
        complete=complete,
        chain_proved_from=_run_ending_at(bundle.entries, checkpoint.tree_size),
    )


def _checked_keys(listed: Sequence[PublicKey]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for key in listed:
        computed = key_id_for(key.public_key)
        if len(key.public_key) != 32 or computed != key.key_id:
            raise KeyInvalid(
                f"public key listed as {key.key_id!r:.40} is not the 32-byte key with that id",
                expected=key.key_id[:40], computed=computed,
            )
        keys[key.key_id] = key.public_key
    return keys


def _check_identity(genesis: GenesisRecord, checkpoint: SignedCheckpoint) -> None:
    for name in ("ledger_id", "hash_alg"):
        if getattr(checkpoint, name) != getattr(genesis, name):
            raise IdentityMismatch(
                f"checkpoint at tree size {checkpoint.tree_size}: {name} differs from the genesis record",
                expected=getattr(genesis, name), computed=getattr(checkpoint, name)[:60], computed_label="found",
            )


def _signing_key(
    checkpoint: SignedCheckpoint, keys: Mapping[str, bytes], trusted: Mapping[str, bytes], *, must_be_trusted: bool
) -> tuple[bytes, bool]:
    if checkpoint.key_id in trusted:
        return trusted[checkpoint.key_id], True
    if must_be_trusted:
        raise UntrustedKey(
            f"checkpoint at tree size {checkpoint.tree_size} is signed by a key that is not trusted",
            expected=" or ".join(sorted(trusted)), computed=checkpoint.key_id[:40], computed_label="found",
        )
    if checkpoint.key_id not in keys:
        raise KeyInvalid(f"checkpoint at tree size {checkpoint.tree_size} is signed by key {checkpoint.key_id!r:.40}, which the bundle does not include")
    return keys[checkpoint.key_id], False


def _check_signature(checkpoint: SignedCheckpoint, public_key: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(checkpoint.signature, checkpoint.message())
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise SignatureInvalid(
            f"checkpoint at tree size {checkpoint.tree_size}: the Ed25519 signature does not verify with key {checkpoint.key_id}"
        ) from None


def _check_consistency(
    hasher: Hasher,
    genesis: GenesisRecord,
    earlier: ConsistencyProof,
    checkpoint: SignedCheckpoint,
    keys: Mapping[str, bytes],
    trusted: Mapping[str, bytes],
) -> None:
    # An earlier checkpoint need not be signed by a trusted key: once it is proved a prefix of the
    # trusted checkpoint its root is settled. Its signature is still checked, as the bundle claims it.
    old = earlier.checkpoint
    _check_identity(genesis, old)
    _check_signature(old, _signing_key(old, keys, trusted, must_be_trusted=False)[0])
    try:
        verify_consistency(hasher, old.tree_size, checkpoint.tree_size, earlier.proof, old.root, checkpoint.root)
    except RootMismatch as err:
        raise ConsistencyProofInvalid(
            f"consistency proof from tree size {old.tree_size} to {checkpoint.tree_size}",
            expected=err.expected.hex(), computed=err.computed.hex(),
        ) from None
    except ProofError as err:
        raise ConsistencyProofInvalid(f"consistency proof from tree size {old.tree_size} to {checkpoint.tree_size}: {err}") from None


def _check_selection_bounds(selection: Selection, checkpoint: SignedCheckpoint) -> None:
    if not 1 <= selection.from_position <= selection.to_position <= checkpoint.tree_size:
        raise SelectionViolated(
            f"selection {selection.describe()} is not within the checkpoint's tree of {checkpoint.tree_size} entries"
        )


def _check_selected(entry: BundleEntry, previous: BundleEntry | None, selection: Selection) -> None:
    if previous is not None and entry.position <= previous.position:
        raise SelectionViolated(
            "entries out of order or repeated", position=entry.position,
            expected=f"a position after {previous.position}", computed=str(entry.position), computed_label="found",
        )
    if not selection.from_position <= entry.position <= selection.to_position:
        raise SelectionViolated(
            "entry outside the selected positions", position=entry.position,
            expected=f"{selection.from_position}..{selection.to_position}", computed=str(entry.position), computed_label="found",
        )
    for name in ("tenant_id", "stream_id"):
        wanted = getattr(selection, name)
        if wanted is not None and getattr(entry, name) != wanted:
            raise SelectionViolated(
                f"{name} is not the selected one", position=entry.position,
                expected=wanted, computed=getattr(entry, name)[:60], computed_label="found",
            )


def _check_entry(
    hasher: Hasher,
    ledger_id: str,
    entry: BundleEntry,
    previous: BundleEntry | None,
    checkpoint: SignedCheckpoint,
    genesis_seed: bytes,
) -> None:
    p = entry.position
    computed = hasher.digest(LEAF_PREFIX + entry.canonical(ledger_id))
    if computed != entry.entry_hash:
        raise EntryHashMismatch(
            "the entry's content does not hash to its entry hash", position=p,
            expected=entry.entry_hash.hex(), computed=computed.hex(),
        )
    link = hasher.digest(NODE_PREFIX + entry.prev_hash + entry.entry_hash)
    if link != entry.chain_hash:
        raise ChainLinkMismatch("chain hash is not H(0x01 || prev_hash || entry_hash)", position=p,
                                expected=entry.chain_hash.hex(), computed=link.hex())
    # The chain links entries only where the bundle has neighbours: back to genesis at position 1,
    # to the previous entry when positions are consecutive, and to the checkpoint's chain head at its size.
    if p == 1 and entry.prev_hash != genesis_seed:
        raise ChainLinkMismatch("prev_hash is not the genesis record's chain seed", position=p,
                                expected=genesis_seed.hex(), computed=entry.prev_hash.hex(), computed_label="found")
    if previous is not None and previous.position == p - 1 and entry.prev_hash != previous.chain_hash:
        raise ChainLinkMismatch(f"prev_hash is not the chain hash of position {p - 1}", position=p,
                                expected=previous.chain_hash.hex(), computed=entry.prev_hash.hex(), computed_label="found")
    if p == checkpoint.tree_size and entry.chain_hash != checkpoint.chain_head:
        raise ChainLinkMismatch("chain hash is not the checkpoint's chain head", position=p,
                                expected=checkpoint.chain_head.hex(), computed=entry.chain_hash.hex(), computed_label="found")
    try:
        verify_inclusion(hasher, p - 1, checkpoint.tree_size, entry.entry_hash, entry.inclusion_proof, checkpoint.root)
    except RootMismatch as err:
        raise InclusionProofInvalid(
            f"inclusion proof does not lead to the root of the checkpoint at tree size {checkpoint.tree_size}",
            position=p, expected=err.expected.hex(), computed=err.computed.hex(),
        ) from None
    except ProofError as err:
        raise InclusionProofInvalid(f"inclusion proof: {err}", position=p) from None


def _run_ending_at(entries: Sequence[BundleEntry], tree_size: int) -> int | None:
    """First position of the gap-free run of entries that ends at `tree_size`, if the bundle has one."""
    if entries[-1].position != tree_size:
        return None
    start = tree_size
    for entry in reversed(entries[:-1]):
        if entry.position != start - 1:
            break
        start -= 1
    return start


def _check_complete(entries: Sequence[BundleEntry], selection: Selection) -> bool:
    """Prove that nothing of the selection was left out, where the ledger makes that provable.

    A plain range must hold every position; a whole stream every version without a gap (from 1 when the
    range starts at position 1). A tenant's entries are not chained to each other, so their completeness
    cannot be proved from the bundle: the result says so instead.
    """
    if selection.tenant_id is not None:
        return False
    if selection.stream_id is None:
        expected = selection.from_position
        for entry in entries:
            if entry.position != expected:
                break
            expected += 1
        if expected != selection.to_position + 1:
            raise SelectionViolated(
                "an entry of the selected range is missing", position=expected,
                expected=f"every position {selection.from_position}..{selection.to_position}",
                computed=f"{len(entries)} entries", computed_label="found",
            )
        return True
    expected_version = 1 if selection.from_position == 1 else entries[0].stream_version
    for entry in entries:
        if entry.stream_version != expected_version:
            raise SelectionViolated(
                f"stream {selection.stream_id} has a gap: an entry of the stream is missing", position=entry.position,
                expected=f"stream version {expected_version}", computed=str(entry.stream_version), computed_label="found",
            )
        expected_version += 1
    return True


def public_key_from_text(text: str) -> bytes:
    """A trusted key as given by a reader: 64 hex digits, or an Ed25519 public key in PEM."""
    stripped = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", stripped):
        return bytes.fromhex(stripped)
    if "-----BEGIN PUBLIC KEY-----" in stripped:
        try:
            key = serialization.load_pem_public_key(stripped.encode())
        except (ValueError, UnsupportedAlgorithm) as err:
            raise TrustedKeyInvalid(f"not a readable PEM public key: {err}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise TrustedKeyInvalid(f"a {type(key).__name__}, not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise TrustedKeyInvalid("expected 64 hex digits or an Ed25519 public key in PEM")
