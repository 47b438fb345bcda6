"""The HTTP application: health, ledger head, checkpoints and the public keys that verify them."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.convertors import StringConvertor, register_url_convertor

from api.audit_routes import router as audit_router
from api.auth import mount as mount_auth
from api.bootstrap import Container
from api.change_notices import install_change_notices
from api.cors import install_cors
from api.errors import install_error_handlers
from api.gateway import mount as mount_gateway
from api.graphql import mount as mount_graphql
from api.ratelimit import install_rate_limits


def create_app(container: Container) -> FastAPI:
    app = FastAPI(title="NexusAI", version="0.1.0", telemetry=_fastapi_telemetry())
    app.state.container = container
    install_error_handlers(app)
    mount_gateway(app)
    mount_graphql(app)
    mount_auth(app)
    app.include_router(audit_router)  # GET /v1/audit/bundle (api/audit_routes.py)
    install_rate_limits(app, container)  # NEXUS_RATE_LIMIT_*: per API key and per user
    install_cors(app, container.settings.cors_origins)  # added last: the outermost layer, so even a 429 carries CORS
    install_change_notices(app, container)  # each process drops its cached copy of what others change

    @app.get("/healthz")
    def health() -> dict[str, object]:
        head = container.ledger.head()
        return {"status": "ok", "ledger": {"size": head.size, "root": head.root.hex()},
                "notices": notices_health(app, container)}

    @app.get("/v1/ledger/head")
    def ledger_head() -> dict[str, object]:
        head = container.ledger.head()
        genesis = container.ledger.genesis()
        return {
            "ledger_id": genesis.ledger_id,
            "hash_alg": genesis.hash_alg,
            "size": head.size,
            "root": head.root.hex(),
            "chain_head": head.chain_head.hex(),
        }

    @app.get("/v1/ledger/checkpoints/latest")
    def latest_checkpoint() -> dict[str, object]:
        checkpoint = container.checkpoints.latest() or container.signer.sign_now()
        return checkpoint.to_json()

    @app.get("/.well-known/nexus-keys.json")
    def public_keys() -> dict[str, object]:
        return {
            "algorithm": "ed25519",
            "keys": {key_id: key.hex() for key_id, key in container.checkpoints.public_keys().items()},
        }

    serve_console(app)  # keep last: the console's SPA fallback answers only what no API route did
    return app


def _fastapi_telemetry() -> dict[str, bool] | None:
    """FastAPI's own OpenTelemetry instrumentation only where it was asked for (FASTAPI_OTEL_AUTO_CONFIGURE=true).

    Otherwise every request would still ask OpenTelemetry whether a provider was configured: about 4 %
    of the gateway's Python time at 200 req/s (py-spy), for a provider no one configured."""
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return None
    return {"tracing": False, "metrics": False, "logs": False}


CONSOLE_DIR = Path(__file__).resolve().parents[1] / "ui" / "dist"


class _ConsolePath(StringConvertor):
    """Any path outside the API's own prefixes, which never reach the console (not even as a 405)."""

    regex = r"(?!(?:v1|graphql|healthz|\.well-known|docs|redoc|openapi\.json)(?:/|$)).*"


register_url_convertor("console", _ConsolePath())


def serve_console(app: FastAPI, folder: Path = CONSOLE_DIR) -> None:
    """The web console (ui/, built by `make up`) at `/`: its files, else index.html for client-side routes."""

    @app.get("/{path:console}", include_in_schema=False)
    def console(path: str) -> Response:
        index = folder / "index.html"
        if not index.is_file():
            return HTMLResponse("<h1>NexusAI</h1><p>The console is not built: <code>make up</code> builds it.</p>", 503)
        wanted = (folder / path).resolve()
        if path and wanted.is_file() and wanted.is_relative_to(folder.resolve()):
            immutable = path.startswith("assets/")  # content-hashed names
            return FileResponse(wanted, headers={"cache-control": "public, max-age=31536000, immutable"
                                                 if immutable else "no-cache"})
        if path.startswith("assets/"):
            raise HTTPException(404, "Not Found")
        return FileResponse(index, headers={"cache-control": "no-cache"})


def notices_health(app: FastAPI, container: Container) -> dict[str, str]:
    """Whether this process hears what the others announce, as its followers last proved it (a pooler in
    transaction mode lets LISTEN succeed and delivers nothing): change notices `trusted` or `not trusted`
    (cached copies then expire after their TTLs), shared rate limits `hearing` or `not hearing` (each
    process then allows the whole limit); `off` where NEXUS_CHANGE_NOTICES=off."""
    invalidation = getattr(app.state, "cache_invalidation", None)
    exchange = container.spending_exchange if getattr(app.state, "shared_buckets", None) is not None else None
    return {
        "change_notices": "off" if invalidation is None else "trusted" if invalidation.listening else "not trusted",
        "shared_rate_limits": "off" if exchange is None else "hearing" if exchange.hearing else "not hearing",
    }
