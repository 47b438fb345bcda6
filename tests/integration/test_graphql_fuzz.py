"""Malformed, huge, deeply nested or wrongly typed documents: a 4xx with a clear error, never a 5xx,
and nothing written to the ledger."""
# ruff: noqa: F811

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_graphql_harness import api  # noqa: F401 - fixture

BAD = [
    ("{ me { tenantId ", "Syntax Error"),
    ("{ nope }", "Cannot query field"),
    ("mutation { createApiKey(input: {name: 1, scopes: 2}) { secret } }", "String cannot represent"),
    ("{ " + " ".join(f"a{i}: me {{ tenantId }}" for i in range(40)) + " }", "aliases"),
    ("{ me { " + "tenantId " * 3000 + "} }", "token"),
]


@pytest.mark.parametrize(("document", "says"), BAD)
def test_a_bad_document_is_a_4xx_with_a_clear_error_and_writes_nothing(api, document, says):
    before = api.size()
    response = api.gql(document)
    assert 400 <= response.status_code < 500, response.text
    assert says.lower() in response.text.lower()
    assert api.size() == before


def test_a_body_that_is_not_json_is_a_400(api):
    with api.http(api.keys["acme"]) as client:
        response = client.post("/graphql", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_random_documents_never_cause_a_5xx_or_a_write(api):
    before = api.size()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(alphabet="{}()[]:$!@,.=\"' \nquerymutationmetenantcreateApiKey0123456789_", max_size=120))
    def check(document: str) -> None:
        response = api.gql(document)
        assert response.status_code < 500, response.text

    check()
    assert api.size() == before
