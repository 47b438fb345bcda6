"""`nexus ledger ...`: inspect and verify the ledger."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from application.verification import VerificationReport, VerifyOptions

ledger_app = typer.Typer(help="Inspect and verify the hash-chained ledger.", no_args_is_help=True)

EXIT_FAULT = 1
EXIT_ERROR = 2
PROGRESS_FROM = 20_000
"""Ledgers smaller than this verify in well under a second; no progress bar for them."""


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


@ledger_app.command()
def verify(
    from_checkpoint: bool = typer.Option(
        False, "--from-checkpoint", help="Start from the newest validly signed checkpoint instead of genesis."
    ),
    trusted_key: list[str] = typer.Option(
        [],
        "--trusted-key",
        help="Ed25519 public key you trust, as hex or a file holding hex or PEM (repeatable). "
        "At least one checkpoint must then be signed by one of them.",
    ),
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL (default: NEXUS_APP_DATABASE_URL, NEXUS_DATABASE_URL, or the embedded server)."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes to verify with (0: one per CPU, at most 2)."),
    segment_size: int = typer.Option(1 << 14, "--segment-size", min=1, help="Entries per unit of work (a power of two)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on large ledgers."),
) -> None:
    """Walk the chain and the tree and check every head, checkpoint and stored Merkle node.

    Prints OK with the size and root, or the first bad position and what is wrong there; exits 1
    when the ledger fails verification, 2 when it could not be verified at all.
    """
    from rich.console import Console

    from application.verification import VerifyOptions

    err = Console(stderr=True)
    try:
        keys = tuple(read_public_key(text) for text in trusted_key)
        url = database_url or _database_url()
        options = VerifyOptions(
            from_checkpoint=from_checkpoint,
            trusted_keys=keys,
            workers=workers or min(2, os.cpu_count() or 1),
            segment_size=segment_size,
        )
        report, seconds = _run_verification(url, options, progress, err)
    except KeyboardInterrupt:
        typer.echo("ERROR: interrupted", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:  # the command line reports one line, never a traceback
        typer.echo(f"ERROR: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    if report.fault is not None:
        typer.echo(f"FAILED: {_one_line(report.fault)}")
        raise typer.Exit(EXIT_FAULT)
    rate = f", {report.entries_walked / seconds:,.0f} entries/s" if seconds > 0 and report.entries_walked else ""
    origin = "genesis" if report.started_from == 0 else f"the checkpoint at size {report.started_from}"
    typer.echo(
        f"OK: size {report.size} root {report.root.hex()} chain {report.chain_head.hex()}"
        f" ({report.entries_walked:,} entries from {origin}, {report.heads_checked:,} tree heads,"
        f" {report.checkpoints_checked:,} signed checkpoints, {report.nodes_checked:,} merkle nodes;"
        f" {seconds:.2f} s{rate})"
    )
    for note in report.notes:
        typer.echo(f"note: {note}")


def _run_verification(url: str, options: VerifyOptions, progress: bool, err: Console) -> tuple[VerificationReport, float]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adapters.postgres.ledger_reader import SnapshotOpener, open_snapshot
    from application.verification import verify_ledger

    bar = Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} entries/s"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (progress and err.is_terminal),
    )
    started = time.perf_counter()
    task: list[TaskID] = []

    def tick(done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        if not task:
            # Started on the first tick, after the worker processes were forked: the bar's refresh
            # thread must not exist when they are (a lock it held would stay held in them).
            bar.start()
            task.append(bar.add_task("verify", total=total, rate="-"))
        elapsed = time.perf_counter() - started
        bar.update(task[0], completed=done, total=max(total, done), rate=f"{done / elapsed:,.0f}" if elapsed else "-")

    try:
        with open_snapshot(url) as (reader, snapshot):
            report = verify_ledger(reader, options, tick, SnapshotOpener(url, snapshot))
    finally:
        bar.stop()
    return report, time.perf_counter() - started


def _database_url() -> str:
    from api.settings import Settings

    settings = Settings()
    if settings.app_database_url or settings.database_url:
        return settings.app_database_url or settings.database_url  # type: ignore[return-value]
    from adapters.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


def read_public_key(text: str) -> bytes:
    """A raw 32-byte Ed25519 public key from hex, or from a file holding hex or a PEM public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    source = text
    path = Path(text)
    if len(text) < 4096 and path.is_file():
        data = path.read_bytes()
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{text}: not an Ed25519 public key")
            return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        source = data.decode("ascii", errors="replace").strip()
    try:
        raw = bytes.fromhex(source)
    except ValueError:
        raise ValueError(f"trusted key {text!r} is neither hex nor a file holding a key") from None
    if len(raw) != 32:
        raise ValueError(f"trusted key {text!r} has {len(raw)} bytes; an Ed25519 public key has 32")
    return raw


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) or type(value).__name__
