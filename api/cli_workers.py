"""`nexus relay` and `nexus project NAME`: the workers as their own processes (the at-scale deployment)."""

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


def project(
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Deployed projections (`nexus projections status`)"),
) -> None:
    """Feed projections from JetStream (catching up from the ledger first); runs until stopped.

    Several names share one consumer and one transaction per batch, as `nexus up` runs them all.
    """
    from adapters.nats.projection_consumer import ProjectionConsumer
    from api.bootstrap import bootstrap, nats_url_for
    from projections.registry import by_name
    from projections.store import ProjectionStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        projections = [by_name(name) for name in names]
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from None
    container = bootstrap()
    settings = container.settings

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        nc = await connect(nats_url_for(container), f"nexus-projection-{'+'.join(names)}")
        try:
            stream = StreamNames(settings.nats_stream, settings.nats_subject_prefix)
            with ProjectionStore(container.database.app_url) as store:
                await ProjectionConsumer(projections, store, container.ledger, nc.jetstream(), stream,
                                         linger_s=settings.projection_linger_ms / 1000).run(stop)
        finally:
            await nc.close()

    try:
        asyncio.run(main())
    finally:
        container.close()
