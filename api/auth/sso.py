"""Single sign-on over REST at /v1/auth/sso: each route maps a request onto application/sso.py.

- `GET /providers?tenant=` -> the tenant's providers for sign-in buttons (id, name, kind; no secret).
- `GET /{provider_id}/login?tenant=&next=` -> 302 to the provider, with a signed login cookie
  (HttpOnly, 10 minutes, path /v1/auth/sso, SameSite=Lax: the callback is a top-level navigation
  coming back from the provider's site, which a Strict cookie would not accompany).
- `GET /callback?code=&state=` -> the session cookies of password sign-in and 302 to `next`; any
  refusal is a 4xx (502 if the provider is unreachable) in the OpenAI error format, and the login cookie
  is cleared either way, so a callback can never be tried twice with it.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.auth.routes import address_of, cookie_settings, set_session_cookies
from api.errors import error_body
from application.sso import SsoService
from domain import sso

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/auth/sso", tags=["auth"])
LOGIN_PATH = "/v1/auth/sso"

# refusal -> (HTTP status, OpenAI error type, code)
_STATUS: dict[type[sso.SsoError], tuple[int, str, str]] = {
    sso.UnknownSsoProvider: (404, "not_found_error", "unknown_sso_provider"),
    sso.InvalidSsoState: (401, "authentication_error", "invalid_sso_state"),
    sso.InvalidAssertion: (401, "authentication_error", "invalid_id_token"),
    sso.IdentityRefused: (403, "permission_error", "sso_identity_refused"),
    sso.IdentityProviderUnavailable: (502, "api_error", "identity_provider_unavailable"),
}


def _service(request: Request) -> SsoService:
    return request.app.state.container.sso


def _redirect_uri(request: Request) -> str:
    base = cookie_settings(request).public_url
    return f"{base.rstrip('/')}{LOGIN_PATH}/callback" if base else str(request.url_for("sso_callback"))


def _refusal(exc: sso.SsoError) -> JSONResponse:
    status, kind, code = _STATUS.get(type(exc), (400, "invalid_request_error", "sso_failed"))
    # a misconfigured provider shows up here; %r, because the message can quote the callback's query string
    # (the provider's error_description), and a newline there must not write a log line of its own
    log.info("single sign-on refused (%s %s): %r", status, code, str(exc))
    return JSONResponse(error_body(str(exc), kind, code), status_code=status, headers={"cache-control": "no-store"})


@router.get("/providers")
def providers(request: Request, tenant: str = Query(min_length=1, max_length=40)) -> list[dict[str, object]]:
    return _service(request).public_providers(tenant)


@router.get("/callback", name="sso_callback")
def callback(request: Request) -> Response:
    s = cookie_settings(request)
    try:
        pair, next_path = _service(request).complete(dict(request.query_params), request.cookies.get(s.sso_cookie),
                                                     _redirect_uri(request), address_of(request))
        answer: Response = RedirectResponse(next_path, status_code=302)
        set_session_cookies(pair, request, answer)
    except sso.SsoError as exc:
        answer = _refusal(exc)
    answer.delete_cookie(s.sso_cookie, path=LOGIN_PATH, httponly=True, samesite="lax", secure=s.cookie_secure)
    return answer


@router.get("/{provider_id}/login")
def login(provider_id: str, request: Request, tenant: str = Query(min_length=1, max_length=40),
          next: str | None = Query(default=None, max_length=2000)) -> Response:
    try:
        url, login_cookie = _service(request).begin(tenant, provider_id, _redirect_uri(request), next)
    except sso.SsoError as exc:
        return _refusal(exc)
    s = cookie_settings(request)
    answer = RedirectResponse(url, status_code=302, headers={"cache-control": "no-store"})
    answer.set_cookie(s.sso_cookie, login_cookie, max_age=600, path=LOGIN_PATH, httponly=True, samesite="lax",
                      secure=s.cookie_secure)
    return answer
