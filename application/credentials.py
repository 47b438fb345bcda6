"""Whether a credential that authenticated a long-lived connection still stands.

A GraphQL websocket is authenticated once, at connection_init, and may then live for hours. Both of
its re-checks ask this one question: the gate in front of every operation started on the socket
(api/ratelimit.py) and every running subscription, once an interval (api/graphql/recheck.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from application.identity import IdentityService
    from application.sessions import SessionService


def still_stands(token: str, *, identity: IdentityService | None, sessions: SessionService | None) -> bool:
    """The session not signed out and its user active, or the API key not revoked (a database read, like
    every HTTP request's). An access token that merely expired since the connection was authenticated still
    stands: the session ends the connection, not the token's 10 minutes, which the console renews over HTTP
    meanwhile. This only ever refuses; authenticating is GraphQL's. No credential at all is left to GraphQL."""
    if token.startswith("nx_") and identity is not None:
        return identity.authenticate(token) is not None
    if token.count(".") == 2 and sessions is not None:
        return bool(sessions.session_alive(token))
    return True
