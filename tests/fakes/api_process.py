"""The NexusAI API as a process of its own, for tests that kill it (-9) mid-request.

    python -m tests.fakes.api_process DATABASE_URL DATA_DIR PORT

Bootstraps on an existing database (the test's; the data folder holds the same master key as the
test's container) and serves the app with uvicorn, with no background workers: a dead process's
open inferences are closed by a sweeper that runs elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from api.app import create_app
from api.bootstrap import bootstrap
from api.settings import Settings


def main(database_url: str, data_dir: str, port: int) -> None:
    container = bootstrap(Settings(database_url=database_url, data_dir=Path(data_dir)))
    uvicorn.run(create_app(container), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
