"""The HTTP application: health, ledger head, checkpoints and the public keys that verify them."""

from __future__ import annotations

from fastapi import FastAPI

from api.bootstrap import Container
from api.errors import install_error_handlers
from api.gateway import mount as mount_gateway
from api.graphql import mount as mount_graphql


def create_app(container: Container) -> FastAPI:
    app = FastAPI(title="NexusAI", version="0.1.0")
    app.state.container = container
    install_error_handlers(app)
    mount_gateway(app)
    mount_graphql(app)

    @app.get("/healthz")
    def health() -> dict[str, object]:
        head = container.ledger.head()
        return {"status": "ok", "ledger": {"size": head.size, "root": head.root.hex()}}

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

    return app
