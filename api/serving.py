"""Running the API under uvicorn, with this process tuned for it."""

from __future__ import annotations

import sys
from typing import Any

from api.settings import Settings


def serve(app: Any, settings: Settings, **uvicorn_options: Any) -> None:
    """uvicorn on settings.host:port (uvloop and httptools when installed), after tuning the process."""
    import uvicorn

    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options)
