"""CORS allow-list (NEXUS_CORS_ORIGINS): none by default (the console is same-origin); listed origins get
their preflight and credentials; every other origin gets no CORS header at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.cors import InvalidCorsOrigin, parse_origins
from tests.integration.test_graphql_harness import Api, start_api

CONSOLE = "https://console.example.com"
EVIL = "https://evil.example.net"
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"}


def _serve(database: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch, origins: str | None,
           **environment: str) -> Iterator[Api]:
    if origins is not None:
        monkeypatch.setenv("NEXUS_CORS_ORIGINS", origins)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    api, server = start_api(database, data_dir)
    try:
        yield api
    finally:
        server.stop()
        api.container.close()


@pytest.fixture
def listed(database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    yield from _serve(database, tmp_path / "data", monkeypatch, f"{CONSOLE}, http://localhost:5173")


@pytest.fixture
def listed_and_limited(database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    yield from _serve(database, tmp_path / "data", monkeypatch, CONSOLE, NEXUS_RATE_LIMIT_KEY_BURST="1",
                      NEXUS_RATE_LIMIT_KEY_PER_MINUTE="1")


@pytest.fixture
def unlisted(database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.delenv("NEXUS_CORS_ORIGINS", raising=False)
    yield from _serve(database, tmp_path / "data", monkeypatch, None)


def _cors_headers(response: Any) -> set[str]:
    return {name for name in response.headers if name.startswith("access-control-")}


def _preflight(api: Api, origin: str, path: str = "/graphql") -> Any:
    with api.http() as client:
        return client.options(path, headers={"origin": origin, **PREFLIGHT})


def test_a_listed_origins_preflight_is_allowed_with_credentials(listed):
    answer = _preflight(listed, CONSOLE)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    assert _preflight(listed, "http://localhost:5173", "/v1/chat/completions").status_code == 200


def test_an_unlisted_origins_preflight_is_denied_without_any_cors_header(listed):
    answer = _preflight(listed, EVIL)
    assert answer.status_code == 400
    assert _cors_headers(answer) == set()


def test_credentials_are_offered_only_to_listed_origins_on_real_requests(listed):
    with listed.http(listed.keys["acme"]) as client:
        ok = client.post("/graphql", json={"query": "{ me { tenantId } }"}, headers={"origin": CONSOLE})
        other = client.post("/graphql", json={"query": "{ me { tenantId } }"}, headers={"origin": EVIL})
    assert ok.headers["access-control-allow-origin"] == CONSOLE
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert _cors_headers(other) == set()  # the browser withholds the answer from that page
    assert "Origin" in other.headers["vary"]


def test_a_listed_page_can_read_a_429_and_its_retry_after(listed_and_limited):
    api = listed_and_limited
    with api.http(api.keys["acme"]) as client:
        client.post("/graphql", json={"query": "{ me { tenantId } }"}, headers={"origin": CONSOLE})
        limited = client.post("/graphql", json={"query": "{ me { tenantId } }"}, headers={"origin": CONSOLE})
    assert limited.status_code == 429
    assert limited.headers["access-control-allow-origin"] == CONSOLE
    assert "retry-after" in limited.headers["access-control-expose-headers"].lower()


def test_by_default_no_origin_is_allowed(unlisted):
    answer = _preflight(unlisted, CONSOLE)
    assert answer.status_code >= 400
    assert _cors_headers(answer) == set()
    with unlisted.http(unlisted.keys["acme"]) as client:
        same_origin = client.post("/graphql", json={"query": "{ me { tenantId } }"}, headers={"origin": CONSOLE})
    assert same_origin.status_code == 200 and _cors_headers(same_origin) == set()


@pytest.mark.parametrize("bad", ["*", "https://*.example.com", "console.example.com", "https://a.example.com/path"])
def test_wildcards_paths_and_bare_hosts_are_refused_at_start(bad):
    with pytest.raises(InvalidCorsOrigin):
        parse_origins(bad)
    assert parse_origins(" https://a.example.com/ ,http://localhost:5173") == ["https://a.example.com",
                                                                              "http://localhost:5173"]
