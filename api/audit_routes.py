"""`GET /v1/audit/bundle`: the caller's tenant's audit bundle, as `nexus audit export --tenant` writes it.

The tenant is always the caller's own (never a parameter), so a bundle holds no other tenant's entry;
application/audit_export.py filters rows by tenant again and verifies the bundle before it is answered.
Callers: an API key (`Bearer nx_...`) or a signed-in user (access JWT as `Bearer` or the console's
HTTP-only cookie, docs/auth.md), with the `ledger.read` permission (domain/rbac.py). A selection of more
than MAX_BUNDLE_ENTRIES entries is a 413 `bundle_too_large` naming the first part's from/to.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.auth.routes import cookie_settings
from api.errors import ApiError, unauthorized
from application.audit_export import (
    ExportError,
    ExportRequest,
    InvalidSelection,
    NothingToExport,
    _resolve,
    _selected_rows,
    export_bundle,
)
from application.ports import Ledger
from domain.audit import dump_bundle
from domain.ledger import LedgerError
from domain.rbac import Actor, PermissionDenied, permissions_for

router = APIRouter(prefix="/v1/audit", tags=["audit"])
PERMISSION = "ledger.read"
# A bundle is built and verified in memory, each entry with its inclusion proof (one query each): beyond
# this many entries the caller is told to download it in parts (413), instead of the process growing.
MAX_BUNDLE_ENTRIES = 20_000


def current_actor(request: Request) -> Actor:
    """The caller as an Actor: an API key's scopes or a user's current roles, mapped by domain/rbac.py."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else request.cookies.get(cookie_settings(request).access_cookie, "")
    container = request.app.state.container
    if token.startswith("nx_"):
        principal = container.identity.authenticate(token)
        if principal is not None:
            return Actor(principal.tenant_id, f"key:{principal.key_id}", permissions_for(
                principal.tenant_id, scopes=principal.scopes, platform_tenant=request.app.state.graphql.settings.platform_tenant))
    elif token.count(".") == 2 and container.sessions is not None:
        actor = container.sessions.authenticate(token)
        if actor is not None:
            return actor
    raise unauthorized("missing, expired or revoked credentials: send 'Authorization: Bearer nx_...' or a session token")


def _bundle(request: Request, selection: ExportRequest) -> tuple[str, bytes]:
    actor = current_actor(request)
    try:
        actor.require(PERMISSION)
    except PermissionDenied as err:
        raise ApiError(403, str(err), "permission_error", "insufficient_permission") from None
    container = request.app.state.container
    tenant_only = ExportRequest(selection.from_position, selection.to_position, selection.stream_id, actor.tenant_id)
    try:
        _within_cap(container.ledger, tenant_only)
        bundle = export_bundle(container.ledger, container.checkpoints, container.signer, tenant_only)
        return actor.tenant_id, dump_bundle(bundle)
    except NothingToExport as err:
        raise ApiError(404, str(err), "invalid_request_error", "nothing_to_export") from None
    except InvalidSelection as err:
        raise ApiError(400, str(err), "invalid_request_error", "invalid_selection") from None
    except (ExportError, LedgerError) as err:  # the bundle would not verify: never hand it out
        raise ApiError(500, str(err), "server_error", "export_failed") from None


def _within_cap(ledger: Ledger, request: ExportRequest) -> None:
    """Count the selected entries (page by page, stopping just past the cap, holding none of them) before
    anything is built; the export's own selection code, so the count is exactly what the bundle would hold."""
    selection = _resolve(request, ledger.head().size)
    last_fitting = None
    for count, row in enumerate(itertools.islice(_selected_rows(ledger, selection), MAX_BUNDLE_ENTRIES + 1), 1):
        if count == MAX_BUNDLE_ENTRIES:
            last_fitting = row.position
        elif count > MAX_BUNDLE_ENTRIES:
            raise ApiError(413, f"the selection ({selection.describe()}) holds more than {MAX_BUNDLE_ENTRIES} entries, "
                           f"the most one bundle may hold; download it in parts with from/to, the first being "
                           f"from={selection.from_position}&to={last_fitting}", "invalid_request_error",
                           "bundle_too_large")


@router.get("/bundle")
async def audit_bundle(
    request: Request,
    from_position: Annotated[int | None, Query(alias="from", ge=1, description="First position (default 1)")] = None,
    to_position: Annotated[int | None, Query(alias="to", ge=1, description="Last position (default: the head)")] = None,
    stream: Annotated[str | None, Query(max_length=200, description="Only this stream's entries")] = None,
) -> Response:
    """One bundle file (docs/audit-bundle.md) of the caller's tenant; verify it with `nexus audit verify`."""
    tenant, data = await asyncio.to_thread(_bundle, request, ExportRequest(from_position, to_position, stream))
    return Response(data, media_type="application/octet-stream", headers={
        "content-disposition": f'attachment; filename="{tenant}-audit.nexus"', "cache-control": "no-store"})
