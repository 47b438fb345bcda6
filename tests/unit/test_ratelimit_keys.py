"""Which presented API keys get a bucket (api/ratelimit.py): only well-formed ones. A malformed `nx_...`
token is refused without a database read anyway; letting it into the bucket map would let anyone, at no
cost to themselves, push real keys' spent buckets out of the bounded map and so reset their limits."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers

from api.ratelimit import RateLimits
from application import token_bucket


def _bearer(token: str) -> Headers:
    return Headers({"authorization": f"Bearer {token}"})


def test_a_spray_of_malformed_keys_cannot_reset_a_real_keys_spent_bucket(monkeypatch):
    monkeypatch.setattr(token_bucket, "MAX_KEYS", 50)
    limits = RateLimits(key_per_minute=1, key_burst=2, user_per_minute=0, user_burst=1)
    key = f"nx_{secrets.token_hex(6)}_{'a' * 43}"
    assert [limits.wait(_bearer(key))[1] > 0 for _ in range(3)] == [False, False, True]
    for i in range(500):
        assert limits.wait(_bearer(f"nx_junk{i}")) == ("", 0.0)  # not counted: refused (401) for free anyway
    assert limits.wait(_bearer(key))[1] > 0  # still spent
    assert len(limits.keys._buckets) == 1
