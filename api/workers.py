"""The workers of `nexus up` (relay, projection consumers, sweeper) on one asyncio loop in a thread of api/worker_process.py."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


class BackgroundWorkers:
    def __init__(self, workers: dict[str, Worker]) -> None:
        self._workers = workers
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="nexus-workers", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        tasks = [asyncio.create_task(self._supervise(name, worker), name=name) for name, worker in self._workers.items()]
        await asyncio.gather(*tasks)

    async def _supervise(self, name: str, worker: Worker) -> None:
        """Restart a worker that crashed, after a pause; a crash is logged loudly, never hidden."""
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await worker(self._stop)
            except Exception:
                log.exception("worker %s crashed; restarting in 2 s", name)
                try:
                    await asyncio.wait_for(self._stop.wait(), 2.0)
                except TimeoutError:
                    pass


def in_process_workers(container, nats_url: str) -> dict[str, Worker]:  # type: ignore[no-untyped-def]
    """The laptop deployment: the relay, the projections and the sweeper in one process beside the API."""
    from adapters.nats.connect import connect
    from adapters.nats.relay import Relay, StreamNames

    settings = container.settings
    names = StreamNames(settings.nats_stream, settings.nats_subject_prefix)

    async def relay(stop: asyncio.Event) -> None:
        nc = await connect(nats_url, "nexus-relay")
        try:
            await Relay(container.ledger, nc.jetstream(), names).run(stop)
        finally:
            await nc.close()

    from adapters.nats.projection_consumer import ProjectionConsumer
    from adapters.postgres.resume_positions import PostgresResumePositions
    from application.inference_sweeper import InferenceSweeper
    from projections.registry import DEPLOYED
    from projections.store import ProjectionStore

    sweeper = InferenceSweeper(container.ledger, resume=PostgresResumePositions(container.database.app_url))

    async def sweep(stop: asyncio.Event) -> None:  # closes inferences and runs a dead process left open
        await sweeper.run(stop)

    store = ProjectionStore(container.database.app_url)
    workers: dict[str, Worker] = {"relay": relay, "sweeper": sweep}

    def consumer_for(projections, label: str):  # type: ignore[no-untyped-def]
        async def consume(stop: asyncio.Event) -> None:
            nc = await connect(nats_url, f"nexus-projection-{label}")
            try:
                await ProjectionConsumer(projections, store, container.ledger, nc.jetstream(), names,
                                         linger_s=settings.projection_linger_ms / 1000).run(stop)
            finally:
                await nc.close()

        return consume

    if settings.projection_consumers == "grouped":
        workers["projections"] = consumer_for(DEPLOYED, "all")
    else:
        for projection in DEPLOYED:
            workers[f"projection:{projection.name}"] = consumer_for(projection, projection.name)
    return workers
