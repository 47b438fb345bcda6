"""DataLoaders for the nested fields of a page: each kind of lookup is one batched data-layer call.

A page of 100 inferences asking for `entry`, `deploymentInfo` and `runGraph` costs three batched calls
(a constant number of SQL statements), not 300. Loaders live as long as the request's context: per
HTTP request, or per websocket connection for subscriptions, where nothing is cached (a deployment
may change during a long subscription; ledger entries never do, but an unbounded cache would grow).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from api.graphql.context import reader
from api.graphql.errors import call
from application import graph_queries as q

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Loaders:
    entries: DataLoader[uuid.UUID, q.LedgerEntry | None]
    deployments: DataLoader[str, dict[str, Any] | None]
    run_graphs: DataLoader[str, dict[str, Any] | None]


def _batched(fn: Callable[[Sequence[K]], list[V]], cache: bool) -> DataLoader[K, V]:
    async def load(keys: list[K]) -> list[V]:
        return await call(fn, keys)

    loader: Callable[[list[K]], Awaitable[list[V]]] = load
    return DataLoader(load_fn=loader, cache=cache)


async def loaders(info: Info) -> Loaders:
    context = info.context
    found: Loaders | None = getattr(context, "nexus_loaders", None)
    if found is None:
        r = await reader(info)
        per_request = isinstance(getattr(context, "request", None), Request)  # HTTP: the context dies with it
        found = Loaders(_batched(r.entries_by_id, per_request), _batched(r.deployments_by_name, per_request),
                        _batched(r.run_graphs, per_request))
        context.nexus_loaders = found
    return found
