"""A refused single sign-on is logged on one line, whatever the callback carried: the provider's
`error_description` comes from the query string, which anyone can write (with a login cookie of their own)."""

from __future__ import annotations

import logging

from api.auth import sso as routes
from domain import sso


def test_a_forged_error_description_cannot_forge_log_lines(caplog):
    forged = "declined\n2026-11-26 INFO api.auth single sign-on succeeded for admin@example.com"
    with caplog.at_level(logging.INFO, logger=routes.log.name):
        answer = routes._refusal(sso.IdentityRefused(f"the identity provider answered 'access_denied': {forged}"))
    assert answer.status_code == 403
    [record] = caplog.records
    assert "\n" not in record.getMessage() and "\r" not in record.getMessage()
    assert "succeeded for admin@example.com" in record.getMessage()  # still said, escaped
