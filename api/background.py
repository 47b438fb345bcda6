"""Tasks that run beside an API process for as long as it serves, stopped with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)

STOP_WITHIN_S = 5.0


def run_while_serving(app: Any, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Start `run(stop)` when the app's lifespan starts; set `stop` and wait for it when the lifespan ends."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop), name=name)
        try:
            async with previous(application) as state:
                yield state
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, STOP_WITHIN_S)
            except TimeoutError:
                log.warning("%s did not stop in %.0f s", name, STOP_WITHIN_S)

    app.router.lifespan_context = lifespan
