"""What the CLI's commands share: the application for one command, and its refusals as exit status 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from api.bootstrap import Container


@contextmanager
def command_container(*refusals: type[Exception]) -> Iterator[Container]:
    """The application's container, closed after the command. An exception of a `refusals` type is the
    command refused (bad input, unknown tenant...): its message on stderr, no stack trace, exit status 1."""
    from api.bootstrap import bootstrap  # imported here: `nexus --help` need not load the application

    container = bootstrap()
    try:
        yield container
    except refusals as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        container.close()
