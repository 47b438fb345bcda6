"""Running the API under uvicorn, with this process tuned for it."""

from __future__ import annotations

import gc
import socket
import sys
from typing import Any

from api.settings import Settings


def serve(app: Any, settings: Settings, *, reuse_port: bool = False, **uvicorn_options: Any) -> None:
    """uvicorn on settings.host:port (uvloop and httptools when installed), after tuning the process.

    With `reuse_port`, the port is bound with SO_REUSEPORT, so that several processes serve it and the
    kernel spreads connections among them."""
    import uvicorn

    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    # Everything made at start-up (modules, tokenizers, the container) lives as long as the process:
    # frozen, it is no longer traversed by the full collections, which took up to 171 ms each at
    # 500 req/s (ops/bench/gateway.py, gateway_gc_pauses) and set the gateway's p99 there.
    gc.collect()
    gc.freeze()
    if not reuse_port:
        uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options)
        return
    listener = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((settings.host, settings.port))
    uvicorn.Server(uvicorn.Config(app, **uvicorn_options)).run(sockets=[listener])
