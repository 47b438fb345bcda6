"""`nexus ledger ...`: inspect and verify the ledger."""

from __future__ import annotations

import typer

ledger_app = typer.Typer(help="Inspect and verify the hash-chained ledger.", no_args_is_help=True)


@ledger_app.command()
def head() -> None:
    """Print the latest tree head."""
    from api.bootstrap import bootstrap

    container = bootstrap()
    try:
        h = container.ledger.head()
        typer.echo(f"size {h.size} root {h.root.hex()} chain {h.chain_head.hex()}")
    finally:
        container.close()
