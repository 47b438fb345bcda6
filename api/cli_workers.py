"""`nexus relay`: the ledger -> JetStream relay as its own process (the at-scale deployment)."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from adapters.nats.connect import connect
from adapters.nats.relay import Relay, StreamNames


def relay() -> None:
    """Publish every ledger position to JetStream, in order, exactly once; runs until stopped."""
    from api.bootstrap import bootstrap, nats_url_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    container = bootstrap()
    settings = container.settings

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        nc = await connect(nats_url_for(container), "nexus-relay")
        try:
            names = StreamNames(settings.nats_stream, settings.nats_subject_prefix)
            await Relay(container.ledger, nc.jetstream(), names).run(stop)
        finally:
            await nc.close()

    try:
        asyncio.run(main())
    finally:
        container.close()
    typer.echo("relay stopped")
