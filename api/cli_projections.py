"""`nexus projections ...` (status, rebuild, resume, catch-up) and `nexus replay` (analytics over history)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

projections_app = typer.Typer(help="Read models: status, rebuild from the ledger, resume.", no_args_is_help=True)
console = Console()


class EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "", style="progress.data.speed")


@contextmanager
def _wired() -> Iterator[tuple[Any, Any]]:
    """The ledger and the projection store, wired by bootstrap() and closed afterwards."""
    from api.bootstrap import bootstrap
    from projections.store import ProjectionStore

    container = bootstrap()
    store = ProjectionStore(container.database.app_url)
    try:
        yield container.ledger, store
    finally:
        store.close()
        container.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), EventsPerSecond(),
        TimeRemainingColumn(), console=console, transient=False,
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@projections_app.command()
def status() -> None:
    """Each deployed projection: active version, checkpoint, lag behind the ledger, last error."""
    from projections.registry import DEPLOYED

    with _wired() as (_, store):
        rows = store.status(DEPLOYED)
    table = Table(title="projections")
    for column in ("name", "version", "schema", "checkpoint", "ledger head", "lag (events)", "lag (time)", "state",
                   "last error"):
        table.add_column(column, justify="right" if column.startswith(("checkpoint", "ledger", "lag")) else "left")
    for s in rows:
        if s.active_schema is None:
            state = "[yellow]not deployed"
        elif s.stopped:
            state = "[bold red]stopped"
        elif s.active_version != s.code_version:
            state = "[yellow]needs rebuild"
        else:
            state = "[green]running"
        if s.active_version is None or s.active_version == s.code_version:
            version = str(s.active_version or "-")
        else:
            version = f"{s.active_version} (code {s.code_version})"
        table.add_row(
            s.name, version, s.active_schema or "-", f"{s.checkpoint:,}", f"{s.head:,}", f"{s.lag_events:,}",
            _age(s.lag_seconds), state, s.last_error or "",
        )
    console.print(table)


@projections_app.command()
def rebuild(
    name: str = typer.Argument(..., help="A deployed projection (see `nexus projections status`)"),
    batch: int = typer.Option(100_000, min=1, help="Events per transaction (memory grows with the keys a batch touches)"),
) -> None:
    """Replay the ledger into a new version of NAME's read model, then swap it in atomically."""
    projection = _deployed(name)
    with _wired() as (ledger, store), _progress() as progress:
        task = progress.add_task(f"rebuild {name}", total=None)
        result = store.rebuild(
            projection, ledger, batch=batch,
            on_progress=lambda done, target: progress.update(task, completed=done, total=target),
        )
    replaced = f", replacing {result.replaced}" if result.replaced else ""
    console.print(
        f"[green]{name}[/] rebuilt into [bold]{result.schema}[/] at position {result.checkpoint:,}{replaced}:"
        f" {result.events:,} events in {result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)"
    )


@projections_app.command()
def resume(name: str = typer.Argument(..., help="A stopped projection")) -> None:
    """Let a stopped projection run again (after fixing what made it fail); it retries the same event."""
    _deployed(name)
    with _wired() as (_, store):
        store.resume(name)
    console.print(f"[green]{name}[/] resumed")


@projections_app.command("catch-up")
def catch_up(
    name: str = typer.Argument(None, help="One projection (default: every deployed one)"),
    batch: int = typer.Option(5000, min=1, help="Events per transaction"),
) -> None:
    """Apply what the ledger holds beyond each checkpoint, reading PostgreSQL directly (no NATS)."""
    from projections.registry import DEPLOYED

    chosen = [_deployed(name)] if name else DEPLOYED
    with _wired() as (ledger, store), _progress() as progress:
        for projection in chosen:
            task = progress.add_task(projection.name, total=None)
            checkpoint = store.catch_up_from_ledger(
                projection, ledger, batch=batch,
                on_batch=lambda done, target, task=task: progress.update(task, completed=done, total=target),
            )
            progress.update(task, completed=checkpoint, total=checkpoint)


def replay(
    projection: str = typer.Option(..., "--projection", help="A module in projections/ (e.g. repricing) or a dotted path"),
    start: str = typer.Option(..., "--from", help="RFC 3339 time or YYYY-MM-DD (inclusive)"),
    end: str = typer.Option(..., "--to", help="RFC 3339 time or YYYY-MM-DD (exclusive)"),
    out: Path = typer.Option(None, "--out", help="Export to FILE.json or FILE.csv instead of printing"),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE handed to the module's create(), repeatable"),
    batch: int = typer.Option(100_000, min=1, help="Events per transaction"),
) -> None:
    """Run a projection over a slice of history into a scratch schema; print or export its report."""
    from projections.replay import export, load_projection, parse_instant
    from projections.replay import replay as run_replay

    params = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        params[key] = value
    try:
        first, last = parse_instant(start), parse_instant(end)
        chosen = load_projection(projection, params)
    except (ValueError, TypeError, ImportError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise typer.BadParameter("export to a .json or .csv file", param_hint="--out")
    started = time.perf_counter()
    with _wired() as (ledger, store), _progress() as progress:
        task = progress.add_task(f"replay {chosen.name}", total=None)
        result = run_replay(
            store, ledger, chosen, first, last, batch=batch,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - started
    span = (
        f"positions {result.first_position:,}..{result.last_position:,}" if result.events else "no events in that slice"
    )
    console.print(f"{chosen.name}: {span}, {result.events:,} events in {seconds:.1f} s")
    if out is not None:
        export(result.rows, out)
        console.print(f"{len(result.rows)} rows written to {out}")
        return
    table = Table(title=f"{chosen.name} {start} .. {end}")
    columns = list(result.rows[0]) if result.rows else []
    for column in columns:
        table.add_column(column, justify="right" if isinstance(result.rows[0][column], int) else "left")
    for row in result.rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _deployed(name: str) -> Any:
    from projections.registry import by_name

    try:
        return by_name(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from None
