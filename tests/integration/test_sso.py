"""Single sign-on with OpenID Connect, through the real HTTP flow: an httpx client follows the redirects
between our API (uvicorn) and a local OIDC provider (tests/fakes/oidc_provider.py). A proven, verified
email of an allowed domain starts the same session as password sign-in, creating the user at its first
sign-in; every other outcome is a precise 401/403 and nothing is appended to the ledger."""
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from adapters.oidc import client as oidc_client
from domain.rbac import actor_for_role
from tests.fakes.oidc_provider import FakeOidcProvider, TestUser
from tests.integration.test_auth_support import email, invite
from tests.integration.test_graphql_harness import Api, api  # noqa: F401 - fixture

CLIENT_ID, CLIENT_SECRET = "nexus-test-client", "s3cret-never-shown-to-anyone-at-all"
CONFIGURE = """mutation($i: ConfigureSsoProviderInput!) { configureSsoProvider(input: $i) { position } }"""
ME = "{ me { tenantId subject permissions } }"


@pytest.fixture(autouse=True)
def plain_http_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cookies without `Secure`, so the test client sends them back over plain HTTP. Autouse fixtures are
    set up before the others, so the harness's `api` is built with it."""
    monkeypatch.setenv("NEXUS_AUTH_COOKIE_SECURE", "false")


@pytest.fixture
def idp() -> Iterator[FakeOidcProvider]:
    # The discovery cache is per process and keyed by URL: an earlier test's provider on a port the OS
    # hands out again would answer for this one (seen once in a full run: a redirect to a dead port).
    oidc_client._documents.clear()
    with FakeOidcProvider(CLIENT_ID, CLIENT_SECRET, TestUser("ada@example.com")) as provider:
        yield provider


def configure(api: Api, idp: FakeOidcProvider, *, default_role: str | None = "developer",
              provider_id: str = "corp") -> None:
    api.data(CONFIGURE, {"i": {"providerId": provider_id, "name": "Corp IdP", "kind": "oidc", "issuer": idp.issuer,
                               "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
                               "allowedDomains": ["example.com"], "defaultRole": default_role}})


def browser(api: Api) -> httpx.Client:
    return httpx.Client(base_url=api.url, follow_redirects=True, timeout=30)


def sign_in(client: httpx.Client, next_path: str = "/dashboard", provider: str = "corp") -> httpx.Response:
    """The whole dance; answers the callback's response (the redirect to `next`, or the refusal)."""
    final = client.get(f"/v1/auth/sso/{provider}/login", params={"tenant": "acme", "next": next_path})
    for response in [*final.history, final]:
        if response.url.path == "/v1/auth/sso/callback":
            return response
    return final


def refused(api: Api, idp: FakeOidcProvider, status: int, words: str) -> None:
    """Sign in once; assert the refusal, its message, and that the ledger did not grow."""
    before = api.size()
    with browser(api) as client:
        answer = sign_in(client)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"], answer.json()
    assert "nexus_access" not in answer.cookies
    assert api.size() == before


def me(api: Api, client: httpx.Client) -> dict[str, Any]:
    """Who the browser's session cookie says it is (GraphQL reads the HTTP-only access cookie)."""
    answer = client.post("/graphql", json={"query": ME})
    return answer.json()["data"]["me"]


# --- configuration ------------------------------------------------------------------------------------

def test_the_sign_in_page_lists_a_tenants_providers_without_any_secret(api, idp):
    configure(api, idp)
    with browser(api) as client:
        listed = client.get("/v1/auth/sso/providers", params={"tenant": "acme"}).json()
        other = client.get("/v1/auth/sso/providers", params={"tenant": "globex"}).json()
    assert listed == [{"id": "corp", "name": "Corp IdP", "kind": "oidc"}]
    assert other == []
    shown = api.data("{ ssoProviders { providerId clientId hasClientSecret allowedDomains defaultRole } }")
    assert shown["ssoProviders"] == [{"providerId": "corp", "clientId": CLIENT_ID, "hasClientSecret": True,
                                      "allowedDomains": ["example.com"], "defaultRole": "developer"}]
    [event] = api.container.ledger.read_stream("sso-acme")
    assert event.type == "SsoProviderConfigured" and CLIENT_SECRET.encode() not in event.payload
    assert orjson.loads(event.payload)["client_secret"]["enc"] == "nexus-credential/v1"  # sealed like deployments'
    metadata = orjson.loads(event.metadata)
    assert metadata["actor"].startswith("key:") and metadata["client_address"] == "127.0.0.1"


def test_reconfiguring_without_a_secret_keeps_the_sealed_one(api, idp):
    configure(api, idp)
    api.data(CONFIGURE, {"i": {"providerId": "corp", "name": "Corp SSO", "kind": "oidc", "issuer": idp.issuer,
                               "clientId": CLIENT_ID, "allowedDomains": ["example.com"], "defaultRole": "viewer"}})
    with browser(api) as client:
        assert client.get("/v1/auth/sso/providers", params={"tenant": "acme"}).json()[0]["name"] == "Corp SSO"
        assert sign_in(client).status_code == 302  # the token endpoint accepted the kept secret
        assert "deployments.write" not in me(api, client)["permissions"]  # created as a viewer now


def test_presets_resolve_to_their_issuers_and_bad_input_is_a_typed_error(api):
    presets = [{"providerId": "g", "kind": "google"},
               {"providerId": "ms", "kind": "azure", "directory": "11111111-2222-3333-4444-555555555555"},
               {"providerId": "ok", "kind": "okta", "issuer": "https://acme.okta.com/oauth2/default"}]
    for preset in presets:
        api.data(CONFIGURE, {"i": {"name": preset["kind"], "clientId": "c", "clientSecret": "s",
                                   "allowedDomains": ["example.com"], **preset}})
    issuers = {p["providerId"]: p["issuer"] for p in api.data("{ ssoProviders { providerId issuer } }")["ssoProviders"]}
    assert issuers == {"g": "https://accounts.google.com",
                       "ms": "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0",
                       "ok": "https://acme.okta.com/oauth2/default"}
    before = api.size()
    for wrong, field in [({"kind": "oidc", "issuer": "http://idp.example.com"}, "issuer"),
                         ({"kind": "google", "allowedDomains": []}, "allowedDomains"),
                         ({"kind": "google", "defaultRole": "owner"}, "defaultRole")]:
        body = api.gql(CONFIGURE, {"i": {"providerId": "x", "name": "x", "clientId": "c", "clientSecret": "s",
                                         "allowedDomains": ["example.com"], **wrong}}).json()
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, body
    assert api.size() == before


def test_removing_a_provider_takes_it_off_the_sign_in_page(api, idp):
    configure(api, idp)
    api.data('mutation { removeSsoProvider(providerId: "corp") { position } }')
    with browser(api) as client:
        assert client.get("/v1/auth/sso/providers", params={"tenant": "acme"}).json() == []
        answer = client.get("/v1/auth/sso/corp/login", params={"tenant": "acme"})
    assert answer.status_code == 404 and "no single sign-on provider 'corp'" in answer.json()["error"]["message"]


# --- sign-in ------------------------------------------------------------------------------------------

def test_first_sign_in_creates_the_user_with_the_default_role_and_starts_a_session(api, idp):
    configure(api, idp)
    with browser(api) as client:
        answer = sign_in(client)
        assert answer.status_code == 302 and answer.headers["location"] == "/dashboard", answer.text
        cookies = answer.headers.get_list("set-cookie")
        assert any(c.startswith("nexus_access=") and "HttpOnly" in c and "SameSite=strict" in c for c in cookies)
        assert any(c.startswith("nexus_refresh=") and "Path=/v1/auth" in c for c in cookies)
        who = me(api, client)
    assert who["tenantId"] == "acme" and "deployments.write" in who["permissions"]  # developer
    user_id = who["subject"].removeprefix("user:")
    [provisioned] = api.container.ledger.read_stream(f"user-{user_id}")
    assert provisioned.type == "UserProvisioned"
    assert orjson.loads(provisioned.payload)["role"] == "developer"
    assert orjson.loads(provisioned.metadata)["actor"] == "sso:corp"
    authorize = idp.authorize_requests[-1]
    assert authorize["code_challenge_method"] == "S256" and authorize["nonce"] and authorize["state"]


def test_a_second_sign_in_reuses_the_user_and_appends_nothing(api, idp):
    configure(api, idp)
    with browser(api) as client:
        sign_in(client)
        first = me(api, client)["subject"]
    before = api.size()
    with browser(api) as client:
        assert sign_in(client).status_code == 302
        assert me(api, client)["subject"] == first
    assert api.size() == before


def test_an_invited_user_signs_in_as_itself_with_its_own_role(api, idp):
    configure(api, idp, default_role=None)
    invited = invite(api, "analyst")
    idp.user = TestUser(invited["email"])
    with browser(api) as client:
        assert sign_in(client).status_code == 302
        who = me(api, client)
    assert who["subject"] == f"user:{invited['user_id']}" and "deployments.write" not in who["permissions"]


def test_next_must_be_a_path_on_this_origin(api, idp):
    configure(api, idp)
    for unsafe in ("//evil.example.com/x", "https://evil.example.com", "/\\evil.example.com"):
        with browser(api) as client:
            assert sign_in(client, next_path=unsafe).headers["location"] == "/"


# --- refusals: each precise, and nothing appended -----------------------------------------------------

def _rogue_key(idp: FakeOidcProvider) -> None:
    idp.sign_with_rogue_key()


# how the provider's next ID token is bent -> the words of our refusal
BAD_TOKENS: dict[str, tuple[Callable[[FakeOidcProvider], None], str]] = {
    "signed with another key": (_rogue_key, "signature does not verify"),
    "unsigned (alg none)": (lambda idp: idp.sign_with_algorithm("none"), "not a valid signed JWT"),
    "signed with the client secret (HS256)": (lambda idp: idp.sign_with_algorithm("HS256"),
                                              "not a valid signed JWT"),
    "for another audience": (lambda idp: idp.tamper(aud="some-other-client"), "claim 'aud' is 'some-other-client'"),
    "expired": (lambda idp: idp.tamper(exp=1_000_000_000, iat=999_999_000), "the ID token expired at 1000000000"),
    "with another nonce": (lambda idp: idp.tamper(nonce="not-the-nonce-we-sent"), "claim 'nonce'"),
    "from another issuer": (lambda idp: idp.tamper(iss="https://evil.example.com"), "claim 'iss'"),
    # OIDC Core 3.1.3.7: with several audiences the token must name us as its authorized party
    "for several audiences without azp": (lambda idp: idp.tamper(aud=[CLIENT_ID, "another-client"]), "claim 'azp'"),
    "authorized for another party": (lambda idp: idp.tamper(azp="another-client"), "claim 'azp'"),
    "issued in the future": (lambda idp: idp.tamper(iat=4_000_000_000), "claim 'iat'"),
    "not yet valid": (lambda idp: idp.tamper(nbf=4_000_000_000), "claim 'nbf'"),
    "without a subject": (lambda idp: idp.tamper(sub=None), "claim 'sub'"),
}


@pytest.mark.parametrize("bad", BAD_TOKENS, ids=list(BAD_TOKENS))
def test_an_id_token_that_proves_nothing_is_refused(api, idp, bad):
    configure(api, idp)
    bend, words = BAD_TOKENS[bad]
    bend(idp)
    refused(api, idp, 401, words)


@pytest.mark.parametrize("keep_id", [False, True], ids=["under a new key id", "under the same key id"])
def test_a_rotated_signing_key_is_fetched_again(api, idp, keep_id):
    configure(api, idp)
    with browser(api) as client:
        assert sign_in(client).status_code == 302  # the provider's keys are now cached
    idp.rotate_key(keep_id=keep_id)
    with browser(api) as client:
        assert sign_in(client).status_code == 302


def test_a_user_who_declines_at_the_provider_gets_its_reason(api, idp):
    configure(api, idp)
    idp.deny("access_denied")
    refused(api, idp, 403, "answered 'access_denied': The user declined")


def test_an_unreachable_provider_is_a_502_and_no_redirect(api, idp):
    configure(api, idp)
    idp.__exit__()  # the provider goes away
    with browser(api) as client:
        answer = client.get("/v1/auth/sso/corp/login", params={"tenant": "acme"})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "identity_provider_unavailable"


def test_an_unverified_email_is_refused(api, idp):
    configure(api, idp)
    idp.user = TestUser("ada@example.com", email_verified=False)
    refused(api, idp, 403, "has not verified the email 'ada@example.com'")


def test_an_email_outside_the_allowed_domains_is_refused(api, idp):
    configure(api, idp)
    idp.user = TestUser("mallory@evil.example.net")
    refused(api, idp, 403, "email domain 'evil.example.net' is not allowed")


def test_a_stranger_is_refused_when_the_provider_creates_no_users(api, idp):
    configure(api, idp, default_role=None)
    refused(api, idp, 403, "is not a user of tenant 'acme'")


def test_a_deactivated_user_is_refused(api, idp):
    configure(api, idp)
    with browser(api) as client:
        sign_in(client)
        user_id = me(api, client)["subject"].removeprefix("user:")
    api.data("mutation($u: String!) { deactivateUser(userId: $u) { position } }", {"u": user_id})
    refused(api, idp, 403, "is deactivated")


def _callback_url(client: httpx.Client) -> str:
    """Start a sign-in and stop where the provider sends the browser back (the callback not yet called)."""
    to_idp = client.get("/v1/auth/sso/corp/login", params={"tenant": "acme"}, follow_redirects=False)
    back = client.get(to_idp.headers["location"], follow_redirects=False)
    return back.headers["location"]


def test_a_replayed_callback_is_refused(api, idp):
    configure(api, idp)
    with browser(api) as client:
        callback = _callback_url(client)
        login_cookie = client.cookies["nexus_sso"]
        assert client.get(callback, follow_redirects=False).status_code == 302
        before = api.size()
        client.cookies.set("nexus_sso", login_cookie, domain="127.0.0.1", path="/v1/auth/sso")  # an attacker's copy
        again = client.get(callback, follow_redirects=False)
    assert again.status_code == 401 and "already completed" in again.json()["error"]["message"]
    assert api.size() == before


def test_a_forged_state_or_a_callback_without_the_browsers_login_cookie_is_refused(api, idp):
    configure(api, idp)
    with browser(api) as client:
        callback = _callback_url(client)
        query = parse_qs(urlsplit(callback).query)
        forged = client.get("/v1/auth/sso/callback", params={"code": query["code"][0], "state": "forged"},
                            follow_redirects=False)
    with browser(api) as stranger:  # another browser: the login cookie is not there
        cookieless = stranger.get(callback, follow_redirects=False)
    assert forged.status_code == 401 and "does not match" in forged.json()["error"]["message"]
    assert cookieless.status_code == 401 and "no sign-in was started" in cookieless.json()["error"]["message"]


# --- who a provider may sign in -------------------------------------------------------------------------

def _owner(api: Api) -> dict[str, str]:
    who = email()
    invitation, _ = api.container.users.invite(actor_for_role("acme", "owner"), who, "owner", "test")
    return {"user_id": invitation.user_id, "email": who}


def test_an_admin_cannot_become_an_owner_through_a_provider_it_configured(api, idp):
    """sso.write is an admin's; owners.write is not. An admin who points a provider at an IdP it controls
    and has it assert an owner's address must not be signed in as that owner (docs/rbac.md: owners are
    granted by owners, never by a login)."""
    configure(api, idp, default_role=None)  # the admin key: the admin role, without owners.write
    owner = _owner(api)
    idp.user = TestUser(owner["email"])
    refused(api, idp, 403, "owner")


def test_a_provider_an_owner_configured_signs_owners_in(api, idp):
    api.container.sso.configure(actor_for_role("acme", "owner"), provider_id="corp", name="Corp IdP", kind="oidc",
                                issuer=idp.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                allowed_domains=["example.com"], address="test")
    owner = _owner(api)
    idp.user = TestUser(owner["email"])
    with browser(api) as client:
        assert sign_in(client).status_code == 302
        assert me(api, client)["subject"] == f"user:{owner['user_id']}"
    configure(api, idp, default_role=None)  # an admin reconfigures it: it no longer speaks for owners
    refused(api, idp, 403, "owner")
