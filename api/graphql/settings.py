"""GraphQL settings, read from NEXUS_GRAPHQL_* at start-up (kept apart from api/settings.py on purpose:
the API's knobs change with the API)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GraphQLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_GRAPHQL_", extra="ignore")

    graphiql: bool = Field(default=False, description="Serve GraphiQL at /graphql (development)")
    introspection: bool = Field(default=True, description="Answer __schema/__type queries")
    max_depth: int = Field(default=10, ge=2, description="Deepest selection nesting accepted")
    max_tokens: int = Field(default=2000, ge=50, description="Largest document accepted, in lexer tokens")
    max_aliases: int = Field(default=15, ge=1, description="Most aliases in one document")
    credential_recheck_s: float = Field(default=5.0, gt=0, description="How often a running subscription "
                                        "re-checks its caller's credential (session, user, key)")
    platform_tenant: str = Field(default="platform", description="Tenant whose owners and admins create tenants")
