"""The projections this deployment runs live (fed by NATS, rebuilt from the ledger)."""

from __future__ import annotations

from typing import Any

from projections.audit_index import AuditIndex
from projections.base import Projection
from projections.costs import Costs
from projections.inference_log import InferenceLog
from projections.usage import Usage

DEPLOYED: list[Projection[Any]] = [Usage(), Costs(), AuditIndex(), InferenceLog()]


def by_name(name: str) -> Projection[Any]:
    for projection in DEPLOYED:
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in DEPLOYED)
    raise KeyError(f"no deployed projection is called {name!r} (deployed: {known})")
