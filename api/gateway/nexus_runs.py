"""POST /v1/nexus/runs (a NEXUS run, whole or as SSE progress) and GET /v1/nexus/runs/{run_id} (its graph).

Thin: the body is checked here (pydantic), the models are resolved before anything is recorded (a bad
body is a 400, an unknown model a 404, and neither leaves a trace), then application.orchestrator runs.

SSE events, in order: `plan`, then per subtask `subtask.started`, `consensus` (k > 1), `subtask.completed`
(independent subtasks interleave), `synthesis.delta`..., `synthesis`, and `done` with the receipts and
total cost; a run that fails ends with `error` instead of `done`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError, error_body
from api.gateway.common import InferencePrincipal, ReaderPrincipal, bad_request, receipt_header
from application.gateway import GatewayError
from application.orchestrator import Orchestrator, RunFailed, RunRequest
from application.routing_table import RoutingTableService
from domain.consensus import DEFAULT_THRESHOLD
from domain.identity import Principal
from domain.sealing import InvalidSubjectId, validate_subject_id

router = APIRouter()
log = logging.getLogger(__name__)


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=32_000)
    stream: bool = False
    planner_model: str | None = Field(default=None, min_length=1, max_length=100)
    synthesis_model: str | None = Field(default=None, min_length=1, max_length=100)
    consensus_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    timeout: float | None = Field(default=None, gt=0, le=600, description="seconds per inference")
    user: str | None = None


def orchestrator(request: Request) -> Orchestrator:
    """Built on first use from the container's ledger, gateway and privacy service (nothing at import time)."""
    state = request.app.state
    found = getattr(state, "nexus", None)
    if found is None:
        c = state.container
        found = state.nexus = Orchestrator(c.ledger, c.gateway, RoutingTableService(c.ledger), c.privacy)
    return found


def _run_request(body: RunBody, principal: Principal, default_timeout_s: float) -> RunRequest:
    subject = principal.key_id
    if body.user is not None:
        try:
            subject = validate_subject_id(body.user)
        except InvalidSubjectId as exc:
            raise bad_request(f"user: {exc}", "user") from None
    return RunRequest(tenant_id=principal.tenant_id, key_id=principal.key_id, subject_id=subject, task=body.task,
                      planner_model=body.planner_model, synthesis_model=body.synthesis_model,
                      threshold=body.consensus_threshold, timeout_s=body.timeout or default_timeout_s)


def _failure(exc: RunFailed) -> dict[str, Any]:
    error = exc.error
    body = error_body(error.message, error.type, error.code)
    body["run_id"] = exc.run_id
    body["steps"] = [s.public() for s in exc.steps]
    return body


@router.post("/v1/nexus/runs")
async def create_run(body: RunBody, request: Request, principal: InferencePrincipal) -> Response:
    nexus = orchestrator(request)
    run = _run_request(body, principal, request.app.state.container.gateway.config.default_timeout_s)
    try:
        ctx = await nexus.prepare(run)
    except GatewayError as exc:
        raise ApiError(exc.status, exc.message, exc.type, exc.code, "model") from None
    headers = {"x-nexus-run-id": run.run_id}
    if not body.stream:
        try:
            result = await nexus.run(ctx)
        except RunFailed as exc:
            return JSONResponse(_failure(exc), status_code=exc.error.status, headers=headers)
        headers["nexus-receipt"] = receipt_header(result.receipt)
        return JSONResponse(result.public(), headers=headers)
    return StreamingResponse(_progress(nexus, ctx), media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})


async def _progress(nexus: Orchestrator, ctx: Any) -> AsyncIterator[bytes]:
    """The run drives a queue; the response drains it. A client that leaves does not stop the run."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

    async def emit(name: str, data: dict[str, Any]) -> None:
        queue.put_nowait((name, data))

    async def drive() -> None:
        try:
            result = await nexus.run(ctx, emit, stream_synthesis=True)
            public = result.public()
            queue.put_nowait(("done", {k: public[k] for k in (
                "id", "status", "answer", "steps", "cost_micros", "flagged", "receipt")}))
        except RunFailed as exc:
            queue.put_nowait(("error", _failure(exc)))
        except Exception:
            log.exception("nexus run %s failed", ctx.request.run_id)
            queue.put_nowait(("error", error_body("internal error", "api_error")))
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(drive())
    nexus.background.add(task)
    task.add_done_callback(nexus.background.discard)
    while (item := await queue.get()) is not None:
        name, data = item
        yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.get("/v1/nexus/runs/{run_id}")
async def get_run(run_id: str, request: Request, principal: ReaderPrincipal) -> dict[str, Any]:
    graph = await asyncio.to_thread(orchestrator(request).graph, principal.tenant_id, run_id)
    if graph is None:  # another tenant's run is answered exactly like one that does not exist
        raise ApiError(404, f"no run {run_id!r} for this tenant", "not_found_error", "run_not_found")
    return graph
