"""The NEXUS routing table: which model name serves each subtask kind (and which plans and synthesises).

Configured by events, `RoutingTableChanged` on the stream `routing-<tenant>` (one stream per tenant: the
table loads in one indexed read, and each change checks the stream's version). A change sets or clears
one kind; the table is the fold of the changes. Kinds without an entry fall back to `general`, then
to the tenant's default model (its first deployment), so an empty table still routes everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from domain.orchestration import ROLE_KINDS, SUBTASK_KINDS

ROUTING_STREAM_PREFIX = "routing-"
KINDS = (*SUBTASK_KINDS, *ROLE_KINDS)
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")


def routing_stream(tenant_id: str) -> str:
    return f"{ROUTING_STREAM_PREFIX}{tenant_id}"


class InvalidRoutingChange(ValueError):
    def __init__(self, field: str, expected: str, found: object) -> None:
        super().__init__(f"routing {field}: expected {expected}, found {found!r}")
        self.field = field


def decide_change(table: Mapping[str, str], tenant_id: str, kind: str, model: str | None) -> dict[str, Any] | None:
    """The RoutingTableChanged payload, or None when the table already says so (nothing to record)."""
    if kind not in KINDS:
        raise InvalidRoutingChange("kind", f"one of {', '.join(KINDS)}", kind)
    if model is not None and not _MODEL.match(model):
        raise InvalidRoutingChange("model", "a model name (letters, digits, ._:/@-)", model)
    if table.get(kind) == model:
        return None
    return {"tenant_id": tenant_id, "kind": kind, "model": model, "previous": table.get(kind)}


def fold(events: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    table: dict[str, str] = {}
    for event_type, payload in events:
        if event_type != "RoutingTableChanged":
            continue
        if payload.get("model") is None:
            table.pop(payload["kind"], None)
        else:
            table[payload["kind"]] = payload["model"]
    return table


def model_for(table: Mapping[str, str], kind: str, default: str) -> str:
    """The kind's model; else the `general` entry (for subtask kinds); else the default."""
    if kind in table:
        return table[kind]
    if kind in SUBTASK_KINDS and "general" in table:
        return table["general"]
    return default
