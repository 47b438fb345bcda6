"""The `nexus` command line: run the system, inspect and prove the ledger."""

from __future__ import annotations

import logging
import threading

import typer
from rich.console import Console

from api.cli_audit import audit_app
from api.cli_ledger import ledger_app
from api.cli_workers import relay

app = typer.Typer(help="NexusAI: an LLM gateway with a ledger it can prove.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(audit_app, name="audit")
app.command("relay")(relay)
console = Console()


@app.command()
def up(
    host: str = typer.Option(None, help="Interface to listen on (default NEXUS_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="Port (default NEXUS_PORT or 8000)"),
) -> None:
    """Start everything on this machine: database (embedded unless configured), API, signer."""
    import uvicorn

    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    container = bootstrap(settings)
    stop = threading.Event()
    signer = threading.Thread(
        target=container.signer.run, args=(stop, settings.checkpoint_interval_s), name="checkpoint-signer", daemon=True
    )
    signer.start()
    console.print(f"[bold green]NexusAI is up[/] at http://{settings.host}:{settings.port}/  (ledger {container.ledger.genesis().ledger_id})")
    try:
        uvicorn.run(create_app(container), host=settings.host, port=settings.port, log_level="info")
    finally:
        stop.set()
        container.close()


if __name__ == "__main__":
    app()
