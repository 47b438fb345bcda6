"""`nexus routing set/show`: which model serves each NEXUS subtask kind (and plans, and synthesises)."""

from __future__ import annotations

import typer

from domain.identity import IdentityError
from domain.routing_table import KINDS, InvalidRoutingChange

routing_app = typer.Typer(help="NEXUS routing table: subtask kind -> model name.", no_args_is_help=True)


def _service():  # type: ignore[no-untyped-def]
    from api.bootstrap import bootstrap
    from application.routing_table import RoutingTableService

    container = bootstrap()
    return container, RoutingTableService(container.ledger)


@routing_app.command("set")
def set_route(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}"),
    model: str = typer.Argument(..., help="Model name (as clients ask for it); '-' clears the entry"),
    tenant: str = typer.Option(..., help="Tenant id"),
) -> None:
    container, service = _service()
    try:
        receipt = service.set(tenant, kind, None if model == "-" else model, actor="cli")
        if receipt is None:
            typer.echo(f"{kind}: unchanged")
        else:
            typer.echo(f"{kind} -> {model} (ledger position {receipt.position})")
    except (InvalidRoutingChange, IdentityError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        container.close()


@routing_app.command("show")
def show(tenant: str = typer.Option(..., help="Tenant id")) -> None:
    container, service = _service()
    try:
        table = service.table(tenant)
        for kind in KINDS:
            typer.echo(f"{kind:<10} {table.get(kind, '(default)')}")
    finally:
        container.close()
