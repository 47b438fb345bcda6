"""Helper for the GraphQL websocket tests: run queries on one graphql-transport-ws connection, with pauses
or actions in between, and say what each answered. No tests here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

ME = "{ me { subject } }"


def on_one_socket(api: Any, token: str, steps: list[Callable[[], None] | None]) -> list[str]:
    """For each step: None runs `{ me { subject } }` on the socket and records 'user:'/'key:' or the error
    code; a callable runs in a thread meanwhile (sign out, sleep...) and records nothing."""

    async def run() -> list[str]:
        transport = WebsocketsTransport(url=api.url.replace("http", "ws") + "/graphql",
                                        subprotocols=["graphql-transport-ws"],
                                        init_payload={"Authorization": f"Bearer {token}"})
        outcomes: list[str] = []
        async with Client(transport=transport) as socket:
            for step in steps:
                if step is not None:
                    await asyncio.to_thread(step)
                    continue
                try:
                    outcomes.append((await socket.execute(gql(ME)))["me"]["subject"].split(":")[0] + ":")
                except TransportQueryError as exc:
                    outcomes.append(str(((exc.errors or [{}])[0].get("extensions") or {}).get("code")))
        return outcomes

    return asyncio.run(run())
