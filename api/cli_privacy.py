"""`nexus privacy ...`: erase a data subject (crypto-shredding) and switch a tenant's content storage."""

from __future__ import annotations

import typer

from api.cli_support import command_container
from domain.identity import IdentityError
from domain.sealing import SealingError

privacy_app = typer.Typer(help="Personal data: erasure by key destruction, content storage.", no_args_is_help=True)


@privacy_app.command("erase")
def erase(
    subject: str = typer.Argument(..., help="Data subject id (a user or an end customer of the tenant)"),
    tenant: str = typer.Option(..., help="Tenant id"),
    actor: str = typer.Option("cli", help="Who asked for the erasure (recorded in the ledger)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Destroy the subject's data key: everything sealed for them becomes unreadable, for good."""
    if not yes:
        typer.confirm(f"Erase subject {subject!r} of tenant {tenant!r}? This cannot be undone", abort=True)
    with command_container(SealingError, IdentityError) as container:
        receipt = container.privacy.erase(tenant, subject, actor)
        typer.echo(f"subject {subject} of tenant {tenant} erased: data key destroyed"
                   f" (SubjectKeyShredded at ledger position {receipt.position})")


@privacy_app.command("content-storage")
def content_storage(
    state: str | None = typer.Argument(None, help="on | off; leave out to show the current setting"),
    tenant: str = typer.Option(..., help="Tenant id"),
    actor: str = typer.Option("cli", help="Who changed it (recorded in the ledger)"),
) -> None:
    """Whether prompts and completions of the tenant are stored (sealed) or replaced by a redaction marker."""
    if state is not None and state not in ("on", "off"):
        typer.echo(f"error: state must be 'on' or 'off', got {state!r}", err=True)
        raise typer.Exit(2)
    with command_container(SealingError, IdentityError) as container:
        if state is None:
            current = container.privacy.content_storage_enabled(tenant)
            typer.echo(f"content storage for tenant {tenant}: {'on' if current else 'off'}")
            return
        receipt = container.privacy.set_content_storage(tenant, state == "on", actor)
        typer.echo(f"content storage for tenant {tenant}: {state} (ledger position {receipt.position})")
