"""Each API process follows change notices while it serves: application/change_notices.py says why."""

from __future__ import annotations

from fastapi import FastAPI

from api.background import run_while_serving
from api.bootstrap import Container
from application.change_notices import CacheInvalidation


def install_change_notices(app: FastAPI, container: Container) -> None:
    notices = container.change_notices
    if notices is None:
        return
    invalidation = CacheInvalidation(container.identity, container.privacy, container.deployments)
    app.state.cache_invalidation = invalidation
    run_while_serving(app, "the change-notice follower", lambda stop: notices.follow(invalidation, stop))
