"""`nexus audit ...`: export and verify audit bundles."""

from __future__ import annotations

import typer

audit_app = typer.Typer(help="Export audit bundles and verify them offline.", no_args_is_help=True)
