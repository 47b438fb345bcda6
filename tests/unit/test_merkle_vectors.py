"""The pure verifier accepts every happy-path RFC 6962 vector and rejects every corrupted one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from domain.hashing import sha256_hasher
from domain.merkle import ProofError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc6962"
CASES = sorted(VECTORS.glob("*/*/*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _verify(case: dict) -> None:
    proof = [_b64(p) for p in case.get("proof") or []]
    if "leafIdx" in case:
        verify_inclusion(sha256_hasher, case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    else:
        verify_consistency(sha256_hasher, case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))


def test_the_vectors_are_present():
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=lambda p: "/".join(p.parts[-3:]))
def test_vector(path: Path):
    case = json.loads(path.read_text())
    if case["wantErr"]:
        with pytest.raises(ProofError):
            _verify(case)
    else:
        _verify(case)
