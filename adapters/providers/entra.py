"""Microsoft Entra ID tokens for Azure OpenAI deployments that authenticate as an app registration.

The OAuth 2.0 client-credentials grant
(https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow): POST
`{authority}/{directory}/oauth2/v2.0/token` with the app's client id and secret, or a client assertion
signed with its certificate's key (a JWT, PS256, naming the certificate by its SHA-256 thumbprint:
https://learn.microsoft.com/entra/identity-platform/certificate-credentials), and the scope of the
deployment's Azure cloud; the answer's `access_token` goes upstream as a bearer token until shortly before
it expires. One token per app registration per process, fetched by one request while the others that
need it wait for that one; an upstream 401 drops it, so the next attempt fetches a new one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import aiohttp
import jwt
import orjson

from application.providers import UpstreamFailure
from domain.deployments import TIMEOUT, UNREACHABLE, EntraClient, classify_status, entra_endpoints

_REFRESH_MARGIN_S = 300.0  # Entra's tokens last 60-90 minutes: renew five minutes before the end
_TOKEN_TIMEOUT_S = 10.0
_ASSERTION_LIFE_S = 300  # Microsoft asks for a short one: 5-10 minutes after nbf at most
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(client: EntraClient, token_url: str, now: float) -> str:
    """The JWT that stands for the client secret: signed with the certificate's key, for this token URL only,
    and with a fresh jti, so that Entra ID can refuse a replayed one."""
    assert client.certificate is not None
    issued = int(now)
    claims = {"aud": token_url, "iss": client.client_id, "sub": client.client_id, "jti": str(uuid.uuid4()),
              "nbf": issued, "iat": issued, "exp": issued + _ASSERTION_LIFE_S}
    return jwt.encode(claims, client.certificate.private_key, algorithm="PS256",
                      headers={"x5t#S256": client.certificate.thumbprint_s256})


class EntraTokens:
    def __init__(self, authority: str = "", *, clock: Callable[[], float] = time.monotonic) -> None:
        self._authority = authority.rstrip("/")  # "" = the one of each deployment's cloud
        self._clock = clock
        self._tokens: dict[tuple[EntraClient, str], tuple[str, float]] = {}  # -> (token, renew after)
        self._fetching: dict[tuple[asyncio.AbstractEventLoop, EntraClient, str], asyncio.Task[str]] = {}

    async def bearer(self, client: EntraClient, base_url: str, session: aiohttp.ClientSession,
                     timeout_s: float) -> str:
        """A valid token for the app registration, fetched now only if none is held or it is about to expire."""
        authority, scope = entra_endpoints(base_url)
        key = (client, scope)
        held = self._tokens.get(key)
        if held is not None and self._clock() < held[1]:
            return held[0]
        loop = asyncio.get_running_loop()
        fetching = self._fetching.get((loop, *key))
        if fetching is None:  # a task of its own: a caller that gives up does not cancel it for the others
            fetching = self._fetching[(loop, *key)] = loop.create_task(
                self._renew(client, key, self._authority or authority, session, min(timeout_s, _TOKEN_TIMEOUT_S)))
            fetching.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved, never logged
        return await asyncio.shield(fetching)

    async def _renew(self, client: EntraClient, key: tuple[EntraClient, str], authority: str,
                     session: aiohttp.ClientSession, timeout_s: float) -> str:
        try:
            token, expires_in = await self._fetch(client, authority, key[1], session, timeout_s)
            self._tokens[key] = (token, self._clock() + expires_in - min(_REFRESH_MARGIN_S, expires_in / 10))
            return token
        finally:
            del self._fetching[(asyncio.get_running_loop(), *key)]

    def forget(self, client: EntraClient) -> None:
        """The upstream refused a token (revoked, or the app's role removed): fetch a new one next time."""
        for key in [k for k in self._tokens if k[0] == client]:
            del self._tokens[key]

    @staticmethod
    async def _fetch(client: EntraClient, authority: str, scope: str, session: aiohttp.ClientSession,
                     timeout_s: float) -> tuple[str, float]:
        token_url = f"{authority}/{client.directory}/oauth2/v2.0/token"
        form = {"grant_type": "client_credentials", "client_id": client.client_id, "scope": scope}
        if client.certificate is not None:
            form.update(client_assertion_type=JWT_BEARER, client_assertion=client_assertion(client, token_url,
                                                                                            time.time()))
        else:
            form["client_secret"] = client.secret
        try:
            async with session.post(token_url, data=form,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamFailure(TIMEOUT, "Microsoft Entra ID did not issue a token in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(UNREACHABLE, f"Microsoft Entra ID unreachable ({type(exc).__name__})") from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if status >= 400:
            # invalid_client (a wrong or expired secret or certificate) and unauthorized_client come as 400 or
            # 401: either way this deployment's credential, which another deployment may not share (auth: fall
            # back).
            refused = 401 if status in (400, 401, 403) else status
            detail = str(answer.get("error_description") or answer.get("error") or "")[:200]
            raise UpstreamFailure(classify_status(refused), f"Microsoft Entra ID refused the deployment's app"
                                  f" registration ({status}): {detail}", refused)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamFailure(UNREACHABLE, "Microsoft Entra ID answered without a token")
        try:  # a number of seconds; some token services send it as a string
            expires_in = float(answer["expires_in"])
        except (KeyError, TypeError, ValueError):
            raise UpstreamFailure(UNREACHABLE, "Microsoft Entra ID answered without a readable expiry") from None
        if not 0 < expires_in < 1e7:
            raise UpstreamFailure(UNREACHABLE, f"Microsoft Entra ID answered an expiry of {expires_in} s")
        return token, expires_in
