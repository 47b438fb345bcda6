"""`nexus audit ...`: export audit bundles from the ledger and verify them offline.

`verify` must run on a machine with no database and none of our drivers, so it imports only
domain.audit; the commands that need the ledger import the bootstrap inside themselves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from domain.audit import BundleInvalid, TrustedKeyInvalid, dump_bundle, public_key_from_text, verify_bytes

audit_app = typer.Typer(help="Export audit bundles and verify them offline.", no_args_is_help=True)

INVALID = 1  # the bundle is not what it claims to be
USAGE = 2  # the command could not run: unreadable file, bad option, no database


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


@audit_app.command()
def export(
    from_position: int = typer.Option(None, "--from", min=1, help="First position (default 1)"),
    to_position: int = typer.Option(None, "--to", min=1, help="Last position (default: the ledger's head)"),
    stream: str = typer.Option(None, "--stream", help="Only this stream's entries"),
    tenant: str = typer.Option(None, "--tenant", help="Only this tenant's entries; no other tenant's entry is included"),
    out: Path = typer.Option(Path("bundle.nexus"), "--out", "-o", help="Bundle file to write ('-' for stdout)"),
    consistency_from: list[int] = typer.Option(
        [], "--consistency-from", help="Tree size of a checkpoint you hold; repeatable (default: log-spaced earlier ones)"
    ),
) -> None:
    """Write ONE bundle file: the entries, their inclusion proofs, a signed checkpoint, consistency proofs, keys."""
    from api.bootstrap import bootstrap
    from application.audit_export import ExportError, ExportRequest, export_bundle
    from domain.ledger import LedgerError

    request = ExportRequest(from_position, to_position, stream, tenant, tuple(consistency_from))
    try:
        container = bootstrap()
    except Exception as err:  # an unreachable or unprepared database: say so in one line
        raise _fail(f"cannot open the ledger: {err}", USAGE) from None
    try:
        bundle = export_bundle(container.ledger, container.checkpoints, container.signer, request)
    except (ExportError, LedgerError) as err:
        raise _fail(f"export failed: {err}", INVALID) from None
    finally:
        container.close()

    data = dump_bundle(bundle)
    if str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            _write_atomically(out, data)
        except OSError as err:
            raise _fail(f"cannot write {out}: {err.strerror or err}", USAGE) from None
    first, last = bundle.entries[0].position, bundle.entries[-1].position
    typer.echo(
        f"wrote {out}: {len(bundle.entries)} entries (positions {first}..{last}; {bundle.selection.describe()}),"
        f" checkpoint at tree size {bundle.checkpoint.tree_size} signed by key {bundle.checkpoint.key_id},"
        f" {len(bundle.consistency)} consistency proofs",
        err=str(out) == "-",
    )


@audit_app.command()
def verify(
    bundle: Path = typer.Argument(..., help="The bundle file"),
    trusted_key: list[str] = typer.Option(
        [], "--trusted-key", help="Ed25519 public key you trust: 64 hex digits, or a file with hex or PEM; repeatable"
    ),
) -> None:
    """Check a bundle fully offline. Prints OK with counts, or one line naming what fails (exit 1)."""
    try:
        raw = bundle.read_bytes()
    except OSError as err:
        raise _fail(f"cannot read {bundle}: {err.strerror or err}", USAGE) from None
    try:
        keys = [_trusted_key(k) for k in trusted_key]
    except TrustedKeyInvalid as err:
        raise _fail(f"--trusted-key: {err}", USAGE) from None
    try:
        result = verify_bytes(raw, keys)
    except BundleInvalid as err:
        raise _fail(f"FAILED {bundle}: {type(err).__name__}: {err}", INVALID) from None
    typer.echo(result.summary())
    if not result.key_trusted:
        typer.echo(
            f"WARNING: the checkpoint's key {result.key_id} came from the bundle itself and was not independently"
            " trusted; pass --trusted-key with a key you obtained elsewhere to prove who signed it"
        )


@audit_app.command()
def keys() -> None:
    """Print the published signing keys (key id, public key hex): what a reader passes as --trusted-key."""
    from api.bootstrap import bootstrap

    try:
        container = bootstrap()
    except Exception as err:
        raise _fail(f"cannot open the ledger: {err}", USAGE) from None
    try:
        for key_id, public_key in sorted(container.checkpoints.public_keys().items()):
            typer.echo(f"{key_id} {public_key.hex()}")
    finally:
        container.close()


def _trusted_key(value: str) -> bytes:
    """A key given inline (hex) or as the path of a file holding hex or PEM."""
    path = Path(value)
    if path.is_file():
        try:
            return public_key_from_text(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            raise TrustedKeyInvalid(f"cannot read {value}: {err}") from None
    return public_key_from_text(value)


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader never sees half a bundle: write beside the target, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
