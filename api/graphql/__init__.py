"""The GraphQL API at /graphql (docs/graphql.md): `mount(app)` wires it onto the FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from adapters.nats.relay import StreamNames
from api.graphql.context import GraphContext, GraphServices
from api.graphql.live import NatsEventFeed
from api.graphql.schema import build_schema
from api.graphql.settings import GraphQLSettings
from application.graph_queries import Sources
from projections.store import ProjectionStore


def services_for(container: Any, settings: GraphQLSettings) -> GraphServices:
    from api.bootstrap import nats_url_for

    names = StreamNames(container.settings.nats_stream, container.settings.nats_subject_prefix)
    feed = NatsEventFeed(lambda: nats_url_for(container), names)
    sources = Sources(container.ledger, container.checkpoints, ProjectionStore(container.database.app_url),
                      container.identity, container.deployments, feed, _orchestrator(container))
    return GraphServices(sources, settings, feed, getattr(container, "users", None),
                         getattr(container, "sessions", None), getattr(container, "sso", None))


def _orchestrator(container: Any) -> Any:
    """NEXUS runs for the startNexusRun mutation, from the same services as the REST endpoint's."""
    if getattr(container, "gateway", None) is None:
        return None
    from application.orchestrator import Orchestrator
    from application.routing_table import RoutingTableService

    return Orchestrator(container.ledger, container.gateway, RoutingTableService(container.ledger), container.privacy)


def mount(app: FastAPI, settings: GraphQLSettings | None = None) -> None:
    settings = settings or GraphQLSettings()
    services = services_for(app.state.container, settings)
    app.state.graphql = services

    def context() -> GraphContext:
        return GraphContext(services)

    router: GraphQLRouter = GraphQLRouter(
        build_schema(settings), context_getter=context, graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
    )
    app.include_router(router, prefix="/graphql")
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with previous(application) as state:
            yield state
        await services.live.close()
        services.sources.projections.close()

    app.router.lifespan_context = lifespan
