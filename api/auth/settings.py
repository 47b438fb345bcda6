"""Session cookie settings, read from NEXUS_AUTH_* at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_AUTH_", extra="ignore")

    cookie_secure: bool = Field(default=True, description="Send session cookies over HTTPS only (off for plain-HTTP development)")
    access_cookie: str = Field(default="nexus_access", description="Cookie holding the access JWT")
    refresh_cookie: str = Field(default="nexus_refresh", description="Cookie holding the refresh token (path /v1/auth)")
