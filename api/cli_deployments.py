"""`nexus deployments add/list/remove`: where a tenant's model names are served. Credentials are never shown."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

import typer

from adapters.secrets import CredentialInvalid
from api.cli_support import command_container
from domain.deployments import PROVIDERS, DeploymentError
from domain.identity import IdentityError
from domain.pricing import InvalidPrice, Price, micros

deployments_app = typer.Typer(help="Deployments: provider, model, base URL, region, credentials, price.",
                              no_args_is_help=True)


def _credential(api_key_env: str | None, api_key_stdin: bool) -> str | None:
    """From an environment variable or standard input, never a command-line argument (shell history)."""
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise typer.BadParameter(f"environment variable {api_key_env} is empty or unset", param_hint="--api-key-env")
        return value
    if api_key_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise typer.BadParameter("nothing on standard input", param_hint="--api-key-stdin")
        return value
    return None


@deployments_app.command("add")
def add(
    name: str = typer.Argument(..., help="Deployment name, unique in the tenant (adding it again replaces it)"),
    tenant: str = typer.Option(..., help="Tenant id"),
    provider: str = typer.Option(..., help=f"One of: {', '.join(sorted(PROVIDERS))}"),
    model: str = typer.Option(..., help="The upstream model id, e.g. gpt-4o-mini or claude-3-5-haiku-latest"),
    model_name: str = typer.Option("", help="The model name clients ask for (default: the deployment name)"),
    base_url: str = typer.Option("", help="Upstream base URL (default: the provider's; required for llama,"
                                          " openai_compatible and azure)"),
    region: str = typer.Option("", help="Region label recorded with every inference; for bedrock, the AWS region"
                                        " its requests are signed for and its default endpoint's"),
    priority: int = typer.Option(0, help="0 is tried first; higher numbers are fallbacks"),
    timeout_ms: int = typer.Option(0, help="Limit of one attempt at this deployment (0: the request's own)"),
    max_retries: int = typer.Option(2, help="Retries on 429/5xx before falling back"),
    input_price: str = typer.Option(..., help="Price per 1M input tokens, e.g. 2.50"),
    output_price: str = typer.Option(..., help="Price per 1M output tokens, e.g. 10.00"),
    cached_input_price: str = typer.Option("", help="Price per 1M cached input tokens (default: the input price)"),
    currency: str = typer.Option("USD", help="ISO 4217 currency of the prices"),
    price_version: str = typer.Option(..., help="Version of the price table these prices come from"),
    api_key_env: str = typer.Option(None, help="Read the provider credential from this environment variable (bedrock:"
                                               " a Bedrock API key, or ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN];"
                                               " azure: an API key, entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET, or"
                                               " entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64)"),
    api_key_stdin: bool = typer.Option(False, help="Read the provider credential from the first line of stdin"),
) -> None:
    """Add or replace a deployment; its credential is sealed (AES-GCM) before it is recorded."""
    try:
        price = Price(micros(input_price), micros(output_price), currency, price_version,
                      micros(cached_input_price) if cached_input_price else None)
        credential = _credential(api_key_env, api_key_stdin)
    except InvalidPrice as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with command_container(DeploymentError, IdentityError) as container:
        receipt = container.deployments.configure(
            tenant, name=name, provider=provider, model=model, price=price, model_name=model_name or None,
            base_url=base_url or None, region=region, priority=priority, timeout_ms=timeout_ms or None,
            max_retries=max_retries, api_key=credential, actor="cli",
        )
        typer.echo(f"deployment {name} configured for tenant {tenant} (ledger position {receipt.position})")


@deployments_app.command("list")
def list_(tenant: str = typer.Option(..., help="Tenant id")) -> None:
    """The tenant's deployments (credentials show only as present or absent)."""
    with command_container(DeploymentError, IdentityError) as container:
        rows = container.deployments.list(tenant)
    if not rows:
        typer.echo(f"tenant {tenant} has no deployments")
        return
    for d in rows:
        price = d["price"]
        typer.echo(
            f"{d['model_name']:<24} {d['name']:<24} p{d['priority']} {d['provider']:<17} {d['model']:<28}"
            f" {d['region'] or '-':<10} in {price['input_micros_per_m']} out {price['output_micros_per_m']}"
            f" {price['currency']}/1M (micros, {price['price_table_version']})"
            f" credentials: {_shown_credential(d)}  {d['base_url']}"
        )


_EXPIRY_WARNING = dt.timedelta(days=30)


def _shown_credential(deployment: dict[str, Any]) -> str:
    """'none', or 'sealed' with the credential's kind and what tells it apart; a certificate's expiry, flagged
    when it is near (Entra ID refuses an expired one at every sign-in)."""
    if not deployment["has_credentials"]:
        return "none"
    facts = deployment.get("credential_facts") or {}
    kind = facts.get("kind")
    if kind is None:  # configured before credentials had facts
        return "sealed"
    if kind == "aws_key_pair":
        return f"sealed ({kind} {facts['access_key_id']})"
    if kind == "entra_certificate":
        not_after = dt.datetime.fromisoformat(facts["certificate_not_after"])
        left = not_after - dt.datetime.now(dt.UTC)
        if left <= dt.timedelta(0):
            flag = " EXPIRED"
        elif left < _EXPIRY_WARNING:
            flag = f" EXPIRES IN {left.days} DAYS" if left.days else f" EXPIRES IN {left.seconds // 3600} HOURS"
        else:
            flag = ""
        return (f"sealed ({kind} {facts['certificate_thumbprint_s256'][:12]}... of app {facts['client_id']},"
                f" valid until {not_after:%Y-%m-%d}{flag})")
    return f"sealed ({kind})"


@deployments_app.command("describe-credentials")
def describe_credentials(tenant: str = typer.Option(..., help="Tenant id"),
                         actor: str = typer.Option("cli", help="Who asked (recorded in the ledger)")) -> None:
    """Record the kind and identifiers (never the secret) of credentials configured before they were recorded,
    which `list` shows as plain 'sealed'."""
    # CredentialInvalid: sealed under another master key than this process holds; nothing is recorded then
    with command_container(DeploymentError, IdentityError, CredentialInvalid) as container:
        names = container.deployments.describe_credentials(tenant, actor=actor)
        rows = {d["name"]: d for d in container.deployments.list(tenant)}
    if not names:
        typer.echo(f"every credential of tenant {tenant} is described already")
    for name in names:
        typer.echo(f"{name}: {_shown_credential(rows[name])}")


@deployments_app.command("remove")
def remove(name: str = typer.Argument(...), tenant: str = typer.Option(..., help="Tenant id")) -> None:
    with command_container(DeploymentError, IdentityError) as container:
        receipt = container.deployments.remove(tenant, name, actor="cli")
        typer.echo(f"deployment {name} removed (ledger position {receipt.position})")


@deployments_app.command("recording")
def recording(
    mode: str = typer.Argument(None, help="strict | deferred; leave out to show the current mode"),
    tenant: str = typer.Option(..., help="Tenant id"),
    actor: str = typer.Option("cli", help="Who changed it (recorded in the ledger)"),
) -> None:
    """When the tenant's InferenceRequested is committed: strict = before any upstream call (no call goes
    unrecorded, one more commit per request); deferred = while the call is in flight (the default)."""
    with command_container(DeploymentError, IdentityError) as container:
        if mode is None:
            typer.echo(f"recording for tenant {tenant}: {container.deployments.recording(tenant)}")
            return
        receipt = container.deployments.set_recording(tenant, mode, actor=actor)
        typer.echo(f"recording for tenant {tenant}: {mode} (ledger position {receipt.position})")
