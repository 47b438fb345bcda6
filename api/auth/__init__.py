"""Sign-in, refresh, sign-out, invitation acceptance and single sign-on over REST at /v1/auth (docs/auth.md)."""

from __future__ import annotations

from fastapi import FastAPI

from api.auth import sso
from api.auth.routes import router
from api.auth.settings import AuthSettings


def mount(app: FastAPI) -> None:
    app.state.auth_settings = AuthSettings()
    app.include_router(router)
    app.include_router(sso.router)
