"""A consumer written only from docs/events.md receives what it should: its tenant's events, in order."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from domain.ledger import NewEvent
from tests.integration.test_relay import _relay_until_caught_up

EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "examples" / "consume_events.py"


def test_the_documented_consumer_gets_one_tenants_inferences_in_order_with_valid_hashes(ledger, nats_url, stream_names):
    for i in range(30):
        tenant = "acme" if i % 3 else "globex"
        ledger.append([NewEvent(f"inference-{i}", "InferenceCompleted", {"i": i}, tenant_id=tenant)])
        ledger.append([NewEvent(f"tenant-{tenant}", "UserInvited", {"i": i}, tenant_id=tenant)])
    asyncio.run(_relay_until_caught_up(ledger, nats_url, stream_names))

    subject = f"{stream_names.subject_prefix}.acme.inference.InferenceCompleted"
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), nats_url, stream_names.stream, subject, "20"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    expected = [e for e in ledger.read(1, 1000) if e.tenant_id == "acme" and e.type == "InferenceCompleted"]
    assert [line["position"] for line in lines] == [e.position for e in expected]
    assert all(line["entry_hash_ok"] for line in lines)
    assert {line["tenant"] for line in lines} == {"acme"}
    assert [line["payload"]["i"] for line in lines] == [i for i in range(30) if i % 3]
