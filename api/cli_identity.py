"""`nexus tenants ...` and `nexus keys ...`: identity from the shell. Keys are printed once."""

from __future__ import annotations

import typer

from domain.identity import IdentityError

tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once, stored hashed).", no_args_is_help=True)


def _container():  # type: ignore[no-untyped-def]
    from api.bootstrap import bootstrap

    return bootstrap()


@tenants_app.command("create")
def create_tenant(tenant: str = typer.Argument(..., help="Tenant id: a-z first, then a-z, 0-9, '-'"),
                  name: str = typer.Option("", help="Display name")) -> None:
    container = _container()
    try:
        receipt = container.identity.create_tenant(tenant, name or tenant, actor="cli")
        typer.echo(f"tenant {tenant} created (ledger position {receipt.position})")
    except IdentityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        container.close()


@keys_app.command("create")
def create_key(tenant: str = typer.Option(..., help="Tenant id"),
               scopes: str = typer.Option("inference,read", help="Comma-separated: inference, read, admin"),
               name: str = typer.Option("", help="A label for the key")) -> None:
    container = _container()
    try:
        key, receipt = container.identity.issue_key(tenant, scopes, name, actor="cli")
        typer.echo(f"key id {key.key_id} (ledger position {receipt.position}); the key, shown once:")
        typer.echo(key.token)
    except IdentityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        container.close()


@keys_app.command("revoke")
def revoke_key(key_id: str = typer.Argument(...), tenant: str = typer.Option(..., help="Tenant id")) -> None:
    container = _container()
    try:
        receipt = container.identity.revoke_key(tenant, key_id, actor="cli")
        typer.echo(f"key {key_id} revoked (ledger position {receipt.position})")
    except IdentityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        container.close()


@keys_app.command("list")
def list_keys(tenant: str = typer.Option(..., help="Tenant id")) -> None:
    container = _container()
    try:
        for key in container.identity.list_keys(tenant):
            state = "revoked" if key["revoked"] else "active"
            typer.echo(f"{key['key_id']}  {state:8} {','.join(key['scopes']):24} {key['name']}")
    finally:
        container.close()
