"""NEXUS_GRAPHQL_INTROSPECTION=false turns off __schema and __type; ordinary queries still validate."""

from __future__ import annotations

import asyncio

import pytest

from api.graphql.schema import build_schema
from api.graphql.settings import GraphQLSettings

INTROSPECT = "{ __schema { queryType { name } } }"
TYPE = '{ __type(name: "Query") { name } }'


def _errors(settings: GraphQLSettings, document: str) -> list[str]:
    result = asyncio.run(build_schema(settings).execute(document))
    return [e.message for e in result.errors or []]


def test_introspection_is_answered_by_default():
    assert _errors(GraphQLSettings(), INTROSPECT) == []


def test_the_environment_switch_turns_introspection_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEXUS_GRAPHQL_INTROSPECTION", "false")
    settings = GraphQLSettings()
    assert settings.introspection is False
    for document in (INTROSPECT, TYPE):
        messages = _errors(settings, document)
        assert messages and all("introspection" in m.lower() for m in messages), messages
