"""GET /healthz: the ledger's head, and whether this process hears what the other processes announce."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

from tests.fakes.harness import gw, no_change_notices, upstreams  # noqa: F401 - fixtures
from tests.polling import eventually


def notices(gw) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with gw.http() as http:
        return http.get("/healthz").json()["notices"]


def test_health_says_that_change_notices_and_shared_rate_limits_are_heard_once_proven(gw):
    eventually(lambda: notices(gw) == {"change_notices": "trusted", "shared_rate_limits": "hearing"},
               "both followers' probes came back")


def test_health_says_when_notices_are_off(no_change_notices, gw):
    assert notices(gw) == {"change_notices": "off", "shared_rate_limits": "off"}
