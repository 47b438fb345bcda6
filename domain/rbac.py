"""Roles, permissions and the one matrix that relates them.

A caller acts inside one tenant. A user holds roles in that tenant; an API key holds scopes. Both map
onto the same permissions here, and every command and sensitive query checks one permission, so this
file is the whole answer to "who may do what" (docs/rbac.md shows it as a table).

Platform permissions (creating tenants) are granted by the matrix like any other, but only take effect
for callers acting in the platform tenant: an owner of tenant `acme` cannot create tenants.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES: tuple[str, ...] = ("owner", "admin", "developer", "analyst", "auditor", "viewer")

# permission -> what it allows (shown in docs/rbac.md)
PERMISSIONS: dict[str, str] = {
    "usage.read": "usage and latency time series",
    "costs.read": "cost reports",
    "ledger.read": "ledger entries and the live event subscription",
    "proofs.read": "signed checkpoints, inclusion and consistency proofs",
    "projections.read": "projection status",
    "tenant.read": "the caller's own tenant",
    "apikeys.read": "API keys (never their secrets)",
    "apikeys.write": "create and revoke API keys",
    "deployments.read": "deployments (never their credentials)",
    "deployments.write": "configure and remove deployments",
    "users.read": "users and their roles",
    "users.write": "invite users, grant and revoke roles other than owner",
    "owners.write": "grant and revoke the owner role",
    "sso.read": "single sign-on providers (never their client secrets)",
    "sso.write": "configure and remove single sign-on providers",
    "inference.run": "call models through the gateway",
    "tenants.create": "create tenants (platform tenant only)",
}
PLATFORM_PERMISSIONS = frozenset({"tenants.create"})

_READ_ALL = frozenset(p for p in PERMISSIONS if p.endswith(".read"))

MATRIX: dict[str, frozenset[str]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": frozenset(PERMISSIONS) - {"owners.write"},
    "developer": frozenset({"usage.read", "costs.read", "ledger.read", "proofs.read", "projections.read",
                            "tenant.read", "apikeys.read", "apikeys.write", "deployments.read",
                            "deployments.write", "inference.run"}),
    "analyst": frozenset({"usage.read", "costs.read", "projections.read", "tenant.read", "deployments.read"}),
    "auditor": frozenset({"usage.read", "costs.read", "ledger.read", "proofs.read", "projections.read",
                          "tenant.read", "apikeys.read", "deployments.read", "users.read", "sso.read"}),
    "viewer": frozenset({"usage.read", "projections.read", "tenant.read"}),
}

# API key scopes (domain/identity.SCOPES) on the same permissions: `admin` is the admin role,
# `read` every read permission, `inference` only the gateway.
SCOPE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": MATRIX["admin"],
    "read": _READ_ALL,
    "inference": frozenset({"inference.run"}),
}


class UnknownRole(ValueError):
    def __init__(self, role: str) -> None:
        super().__init__(f"role {role!r} is not one of {list(ROLES)}")
        self.role = role


class PermissionDenied(Exception):
    def __init__(self, permission: str, tenant_id: str) -> None:
        super().__init__(f"this caller lacks the {permission!r} permission in tenant {tenant_id!r}")
        self.permission = permission
        self.tenant_id = tenant_id


def validate_role(role: str) -> str:
    if role not in MATRIX:
        raise UnknownRole(role)
    return role


@dataclass(frozen=True)
class Actor:
    """Who is calling, in which tenant, allowed what. Every read and write is scoped to `tenant_id`."""

    tenant_id: str
    subject: str  # "key:<key_id>" or "user:<user_id>": recorded as the actor of every command
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        if permission not in PERMISSIONS:  # a typo must not silently deny (or allow) forever
            raise KeyError(f"unknown permission {permission!r}")
        if permission not in self.permissions:
            raise PermissionDenied(permission, self.tenant_id)


def permissions_for(tenant_id: str, *, roles: frozenset[str] = frozenset(), scopes: frozenset[str] = frozenset(),
                    platform_tenant: str) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= MATRIX[validate_role(role)]
    for scope in scopes:
        granted |= SCOPE_PERMISSIONS.get(scope, frozenset())
    if tenant_id != platform_tenant:
        granted -= PLATFORM_PERMISSIONS
    return frozenset(granted)


def actor_for_role(tenant_id: str, role: str, *, subject: str = "test", platform_tenant: str = "platform") -> Actor:
    return Actor(tenant_id, subject, permissions_for(tenant_id, roles=frozenset({role}),
                                                    platform_tenant=platform_tenant))
