"""The OpenAI-compatible REST surface: one router module per resource, mounted by `mount`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.gateway import chat, embeddings, models, nexus_runs, receipts


def mount(app: FastAPI) -> None:
    # The two routes every inference takes are plain Starlette endpoints, first in the routing table:
    # FastAPI's dependency solving and a scan of the other routes cost them about 0.1 ms each.
    app.router.routes[0:0] = [*chat.routes, *embeddings.routes]
    for module in (models, receipts, nexus_runs):
        app.include_router(module.router)
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with previous(application) as state:
            yield state
        gateway = getattr(application.state.container, "gateway", None)
        if gateway is not None:  # pooled upstream connections belong to this event loop
            await gateway.aclose()

    app.router.lifespan_context = lifespan
