"""Session cookie and single sign-on settings, read from NEXUS_AUTH_* at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_AUTH_", extra="ignore")

    cookie_secure: bool = Field(default=True, description="Send session cookies over HTTPS only (off for plain-HTTP development)")
    access_cookie: str = Field(default="nexus_access", description="Cookie holding the access JWT")
    refresh_cookie: str = Field(default="nexus_refresh", description="Cookie holding the refresh token (path /v1/auth)")
    sso_cookie: str = Field(default="nexus_sso", description="Cookie binding a single sign-on to the browser (10 min)")
    public_url: str | None = Field(default=None, description="The API's external URL (https://nexus.example.com) for "
                                   "SSO redirect URIs; unset = the Host of the request")
