"""The /v1/auth routes: each maps a request onto application/sessions.py or application/users.py.

Tokens are answered in the body (for API clients) and set as HTTP-only, SameSite=strict cookies (for the
console): the access cookie on `/`, the refresh cookie only on `/v1/auth`, so it travels nowhere else.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.auth.settings import AuthSettings
from api.errors import ApiError
from application.sessions import InvalidCredentials, InvalidRefreshToken, SessionService, TokenPair, TooManyAttempts
from domain import users

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def cookie_settings(request: Request) -> AuthSettings:
    """Read once at start-up by api.auth.mount (so each app, and each test's app, has its own)."""
    return request.app.state.auth_settings


class SignIn(BaseModel):
    tenant: str = Field(min_length=1, max_length=40)
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: str | None = None


class AcceptInvite(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


def _sessions(request: Request) -> SessionService:
    return request.app.state.container.sessions


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def set_session_cookies(pair: TokenPair, request: Request, response: Response) -> None:
    """The console's session: the same two cookies for password sign-in, refresh and single sign-on."""
    s = cookie_settings(request)
    now = dt.datetime.now(dt.UTC)
    response.set_cookie(s.access_cookie, pair.access_token, max_age=int((pair.access_expires_at - now).total_seconds()),
                        path="/", httponly=True, samesite="strict", secure=s.cookie_secure)
    response.set_cookie(s.refresh_cookie, pair.refresh_token,
                        max_age=int((pair.refresh_expires_at - now).total_seconds()),
                        path="/v1/auth", httponly=True, samesite="strict", secure=s.cookie_secure)
    response.headers["cache-control"] = "no-store"


def _answer(pair: TokenPair, request: Request, response: Response) -> dict[str, object]:
    set_session_cookies(pair, request, response)
    now = dt.datetime.now(dt.UTC)
    return {"token_type": "Bearer", "access_token": pair.access_token,
            "expires_in": int((pair.access_expires_at - now).total_seconds()),
            "refresh_token": pair.refresh_token, "refresh_expires_at": pair.refresh_expires_at.isoformat(),
            "user_id": pair.user_id, "tenant_id": pair.tenant_id}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "authentication_error", "invalid_credentials")


@router.post("/sign-in")
def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, object]:
    try:
        pair = _sessions(request).sign_in(body.tenant, body.email, body.password, address_of(request))
    except TooManyAttempts as exc:
        raise ApiError(429, str(exc), "rate_limit_error", "too_many_attempts") from None
    except InvalidCredentials as exc:
        raise _unauthorized(str(exc)) from None
    return _answer(pair, request, response)


@router.post("/refresh")
def refresh(request: Request, response: Response, body: RefreshBody | None = None) -> dict[str, object]:
    token = (body.refresh_token if body else None) or request.cookies.get(cookie_settings(request).refresh_cookie, "")
    try:
        pair = _sessions(request).refresh(token)
    except InvalidRefreshToken as exc:
        raise ApiError(401, str(exc), "authentication_error", "invalid_refresh_token") from None
    return _answer(pair, request, response)


@router.post("/sign-out", status_code=204)
def sign_out(request: Request, response: Response, body: RefreshBody | None = None) -> Response:
    s = cookie_settings(request)
    refresh_token = (body.refresh_token if body else None) or request.cookies.get(s.refresh_cookie)
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    access = bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(s.access_cookie)
    _sessions(request).sign_out(refresh_token, access)
    answer = Response(status_code=204)
    answer.delete_cookie(s.access_cookie, path="/", httponly=True, samesite="strict", secure=s.cookie_secure)
    answer.delete_cookie(s.refresh_cookie, path="/v1/auth", httponly=True, samesite="strict", secure=s.cookie_secure)
    return answer


@router.post("/accept-invite")
def accept_invite(body: AcceptInvite, request: Request) -> dict[str, object]:
    """Set the first password with an invitation token (the same as GraphQL setPassword(inviteToken))."""
    try:
        receipt = request.app.state.container.users.accept_invitation(body.token, body.password, address_of(request))
    except users.WeakPassword as exc:
        raise ApiError(400, str(exc), "invalid_request_error", "weak_password", "password") from None
    except (users.InvalidInvitation, users.UserInactive) as exc:
        raise ApiError(400, str(exc), "invalid_request_error", "invalid_invitation", "token") from None
    return {"user_id": receipt.stream_id.removeprefix("user-"), "position": receipt.position}
