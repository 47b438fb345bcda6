"""Running the API under uvicorn, with this process tuned for it."""

from __future__ import annotations

import gc
import sys
from typing import Any

from api.settings import Settings


def serve(app: Any, settings: Settings, **uvicorn_options: Any) -> None:
    """uvicorn on settings.host:port (uvloop and httptools when installed), after tuning the process."""
    import uvicorn

    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    # Everything made at start-up (modules, tokenizers, the container) lives as long as the process:
    # frozen, it is no longer traversed by the full collections, which took up to 171 ms each at
    # 500 req/s (ops/bench/gateway.py, gateway_gc_pauses) and set the gateway's p99 there.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options)
