"""GET /v1/models: the model names the key's tenant has deployments for."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from api.errors import ApiError
from api.gateway.common import InferencePrincipal
from domain.deployments import Deployment

router = APIRouter()


def _model(name: str, deployments: list[Deployment]) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0,
            "owned_by": ",".join(sorted({d.provider for d in deployments}))}


@router.get("/v1/models")
async def list_models(request: Request, principal: InferencePrincipal) -> dict[str, Any]:
    table = await asyncio.to_thread(request.app.state.container.gateway.models, principal.tenant_id)
    return {"object": "list", "data": [_model(name, table[name]) for name in sorted(table)]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request, principal: InferencePrincipal) -> dict[str, Any]:
    table = await asyncio.to_thread(request.app.state.container.gateway.models, principal.tenant_id)
    if model not in table:
        raise ApiError(404, f"the model {model!r} does not exist", "invalid_request_error", "model_not_found", "model")
    return _model(model, table[model])
