"""`nexus tenants ...` and `nexus keys ...`: identity from the shell. Keys are printed once."""

from __future__ import annotations

import typer

from api.cli_support import command_container
from domain.identity import IdentityError

tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once, stored hashed).", no_args_is_help=True)


@tenants_app.command("create")
def create_tenant(tenant: str = typer.Argument(..., help="Tenant id: a-z first, then a-z, 0-9, '-'"),
                  name: str = typer.Option("", help="Display name")) -> None:
    with command_container(IdentityError) as container:
        receipt = container.identity.create_tenant(tenant, name or tenant, actor="cli")
        typer.echo(f"tenant {tenant} created (ledger position {receipt.position})")


@keys_app.command("create")
def create_key(tenant: str = typer.Option(..., help="Tenant id"),
               scopes: str = typer.Option("inference,read", help="Comma-separated: inference, read, admin"),
               name: str = typer.Option("", help="A label for the key")) -> None:
    with command_container(IdentityError) as container:
        key, receipt = container.identity.issue_key(tenant, scopes, name, actor="cli")
        typer.echo(f"key id {key.key_id} (ledger position {receipt.position}); the key, shown once:")
        typer.echo(key.token)


@keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(...), tenant: str = typer.Option(..., help="Tenant id")) -> None:
    with command_container(IdentityError) as container:
        receipt = container.identity.revoke_key(tenant, key_id, actor="cli")
        typer.echo(f"key {key_id} revoked (ledger position {receipt.position})")


@keys_app.command("list")
def list_keys(tenant: str = typer.Option(..., help="Tenant id")) -> None:
    with command_container(IdentityError) as container:
        for key in container.identity.list_keys(tenant):
            state = "revoked" if key["revoked"] else "active"
            typer.echo(f"{key['key_id']}  {state:8} {','.join(key['scopes']):24} {key['name']}")
