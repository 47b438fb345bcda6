"""Connecting to NATS quietly: wait for the port first, so nats-py prints no refused-connection traces."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)


async def wait_for_server(url: str, timeout: float = 15.0) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"NATS at {url} did not answer within {timeout} s") from None
            await asyncio.sleep(0.05)


async def connect(url: str, name: str) -> Client:
    await wait_for_server(url)

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)

    async def on_disconnected() -> None:
        log.warning("nats %s: disconnected", name)

    async def on_reconnected() -> None:
        log.info("nats %s: reconnected", name)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
