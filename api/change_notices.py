"""Each API process follows change notices while it serves: application/change_notices.py says why."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.bootstrap import Container
from application.change_notices import CacheInvalidation

log = logging.getLogger(__name__)


def install_change_notices(app: FastAPI, container: Container) -> None:
    notices = container.change_notices
    if notices is None:
        return
    invalidation = CacheInvalidation(container.identity, container.privacy, container.deployments)
    app.state.cache_invalidation = invalidation
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        stop = asyncio.Event()
        following = asyncio.create_task(notices.follow(invalidation, stop))
        try:
            async with previous(application) as state:
                yield state
        finally:
            stop.set()
            try:
                await asyncio.wait_for(following, 5)
            except TimeoutError:
                log.warning("the change-notice follower did not stop in 5 s")

    app.router.lifespan_context = lifespan
