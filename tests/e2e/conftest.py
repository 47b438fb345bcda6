"""Shared fixtures of the browser tests: Debian's headless Chromium driven by Playwright, and the real API
(test PostgreSQL, NATS, uvicorn) in front of a fake OpenAI upstream. Screenshots go to test-artifacts/console/.

The console must be built first (`make test` builds ui/dist when it is missing or stale).
"""
# ruff: noqa: F811  (pytest fixtures imported from the harnesses are parameters here)

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import api.app
from api.app import CONSOLE_DIR
from tests.fakes.harness import PRICE, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import Upstreams
from tests.integration.test_graphql_harness import Api, start_api

CHROMIUM = os.environ.get("NEXUS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# NEXUS_TEST_ARTIFACTS: another folder, for a second run at the same time (.ci/run runs two).
ARTIFACTS = Path(os.environ.get("NEXUS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts" / "console")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                    "(`apt-get install -y chromium`; .ci/run installs it)", pytrace=False)
    if not (CONSOLE_DIR / "index.html").is_file():
        pytest.fail(f"the console is not built ({CONSOLE_DIR}): run `make test`, which builds it", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Opens a page in a browser context of its own, closed after the test however it ends: at `viewport`,
    its console errors collected into `errors` when given, each wait bounded by `timeout_ms`."""
    contexts: list[Any] = []

    def open_page(viewport: dict[str, int] = DESKTOP, errors: list[str] | None = None, *,
                  timeout_ms: int = 15_000) -> Any:
        context = browser.new_context(viewport=viewport)  # downloads accepted: Playwright's default
        contexts.append(context)
        page = context.new_page()
        if errors is not None:
            watch(page, errors)
        page.set_default_timeout(timeout_ms)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def console_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ui/dist taken once: another job rebuilding ui/dist mid-run (new chunk names, a moment with no
    index.html) must not pull files from under a page the browser has loaded."""
    for _ in range(20):
        copy = tmp_path_factory.mktemp("console") / "dist"
        try:
            shutil.copytree(CONSOLE_DIR, copy)
        except (OSError, shutil.Error):
            copy = None
        if copy is not None and _complete(copy):
            return copy
        time.sleep(0.5)  # a build is writing ui/dist right now
    pytest.fail(f"no complete build in {CONSOLE_DIR}: run `make console`", pytrace=False)


def _complete(dist: Path) -> bool:
    index = dist / "index.html"
    return index.is_file() and all((dist / asset).is_file()
                                   for asset in re.findall(r'(?:src|href)="/(assets/[^"]+)"', index.read_text()))


@pytest.fixture
def console(database: Any, tmp_path: Path, nats_url: str, stream_names: Any, upstreams: Upstreams,
            console_dist: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API on the test database with tenant `acme`, an admin key, and model `gpt-test` on the fake upstream,
    serving the console from the session's copy of ui/dist."""
    monkeypatch.setattr(api.app, "serve_console", functools.partial(api.app.serve_console, folder=console_dist))
    running, server = start_api(database, tmp_path / "data", nats_url, stream_names)
    with ThreadPoolExecutor(1) as pool:  # asyncio.run beside Playwright's own loop
        pool.submit(running.ensure_stream).result()
    running.container.deployments.configure(
        "acme", name="primary", provider="openai", model="gpt-upstream", model_name="gpt-test",
        base_url=upstreams.base("console-e2e"), price=PRICE, api_key="sk-upstream-secret")
    try:
        yield running
    finally:
        server.stop()
        running.container.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors and uncaught exceptions of the pages a test watches with `watch(page, errors)`."""
    return []


def watch(page: Any, errors: list[str]) -> None:
    """Collect the page's console errors and uncaught exceptions into `errors`."""
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))


def shot(page: Any, name: str) -> None:
    """Save a full-page screenshot to test-artifacts/console/{name}.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in_with_key(page: Any, key: str) -> None:
    """Use the sign-in form's API-key option (the page must show the sign-in form)."""
    page.get_by_role("tab", name="API key").click()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()

