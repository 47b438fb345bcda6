"""Change notices as the triggers send them, and which cache each one reaches."""

from __future__ import annotations

import pytest

from adapters.postgres.change_notices import parse_notice
from application.change_notices import CacheInvalidation
from application.ports import ChangeNotice


class Forgetting:
    """Stands in for the identity, privacy and deployment services: records what it was told to forget."""

    def __init__(self) -> None:
        self.forgot: list[tuple] = []

    def __getattr__(self, name: str):
        if not name.startswith(("forget", "invalidate", "last_until")):
            raise AttributeError(name)
        return lambda *args: self.forgot.append((name, *args))


def test_ledger_and_keystore_notices_are_parsed_from_the_triggers_json():
    assert parse_notice('{"stream": "apikey-k1", "tenant": "acme", "type": "ApiKeyRevoked"}') == \
        ChangeNotice("acme", stream_id="apikey-k1")
    assert parse_notice('{"data_key": ["acme", "user-42"]}') == ChangeNotice("acme", subject_id="user-42")


@pytest.mark.parametrize("payload", ["not json", "{}", '{"stream": "apikey-k1"}', '{"data_key": ["acme"]}', "[1]"])
def test_anything_else_is_refused_by_name(payload):
    with pytest.raises(ValueError, match="not a change notice"):
        parse_notice(payload)


@pytest.mark.parametrize(("notice", "forgotten"), [
    (ChangeNotice("acme", stream_id="apikey-k1"), [("identity", "forget_key", "k1")]),
    (ChangeNotice("acme", stream_id="tenant-acme"), [("privacy", "forget_switch", "acme")]),
    (ChangeNotice("acme", stream_id="deployments-acme"), [("deployments", "invalidate", "acme")]),
    (ChangeNotice("acme", subject_id="user-42"), [("privacy", "forget_key", "acme", "user-42")]),
    (ChangeNotice("acme", stream_id="tenant-other"), []),  # not this tenant's stream: nothing it caches
    (ChangeNotice("acme", stream_id="inference-r1"), []),
])
def test_each_notice_reaches_the_cache_that_holds_the_changed_state(notice, forgotten):
    services = {"identity": Forgetting(), "privacy": Forgetting(), "deployments": Forgetting()}
    CacheInvalidation(**services).changed(notice)  # type: ignore[arg-type]
    assert [(name, *call) for name, s in services.items() for call in s.forgot] == forgotten


def test_a_notice_that_cannot_be_applied_makes_every_cache_forget_everything():
    class Failing(Forgetting):
        def forget_key(self, key_id: str) -> None:
            raise RuntimeError("boom")

    identity, privacy = Failing(), Forgetting()
    invalidation = CacheInvalidation(identity, privacy)  # type: ignore[arg-type]
    invalidation.changed(ChangeNotice("acme", stream_id="apikey-k1"))
    assert ("forget_everything",) in identity.forgot and privacy.forgot == [("forget_everything",)]
    assert invalidation.gaps == 1
