"""Sign-in, refresh, sign-out and invitation acceptance over REST at /v1/auth (docs/auth.md)."""

from __future__ import annotations

from fastapi import FastAPI

from api.auth.routes import router


def mount(app: FastAPI) -> None:
    app.include_router(router)
