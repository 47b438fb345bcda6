"""`nexus routing set/show`: which model serves each NEXUS subtask kind (and plans, and synthesises)."""

from __future__ import annotations

import typer

from api.cli_support import command_container
from application.routing_table import RoutingTableService
from domain.identity import IdentityError
from domain.routing_table import KINDS, InvalidRoutingChange

routing_app = typer.Typer(help="NEXUS routing table: subtask kind -> model name.", no_args_is_help=True)


@routing_app.command("set")
def set_route(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}"),
    model: str = typer.Argument(..., help="Model name (as clients ask for it); '-' clears the entry"),
    tenant: str = typer.Option(..., help="Tenant id"),
) -> None:
    with command_container(InvalidRoutingChange, IdentityError) as container:
        receipt = RoutingTableService(container.ledger).set(tenant, kind, None if model == "-" else model, actor="cli")
        if receipt is None:
            typer.echo(f"{kind}: unchanged")
        else:
            typer.echo(f"{kind} -> {model} (ledger position {receipt.position})")


@routing_app.command("show")
def show(tenant: str = typer.Option(..., help="Tenant id")) -> None:
    with command_container(IdentityError) as container:
        table = RoutingTableService(container.ledger).table(tenant)
        for kind in KINDS:
            typer.echo(f"{kind:<10} {table.get(kind, '(default)')}")
