"""The web console in a real browser: Debian's headless Chromium driven by Playwright, against the real API
(test PostgreSQL, NATS, uvicorn) in front of a fake OpenAI upstream. Fixtures live in tests/e2e/conftest.py;
screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from domain.audit import load_bundle, verify_bytes
from tests.e2e.conftest import DESKTOP, PHONE, shot, sign_in_with_key
from tests.fakes.certificates import pem_bundle, self_signed, thumbprint_s256
from tests.fakes.harness import PRICE
from tests.fakes.oidc_provider import FakeOidcProvider, TestUser
from tests.fakes.upstream import ENTRA_CERTIFICATE_KEY, ENTRA_CLIENT_ID, ENTRA_DIRECTORY, REPLY, drip
from tests.integration.test_auth_support import PASSWORD, user_with_password


def test_sign_in_chat_log_dashboard_trust_center_and_api_keys(new_page, console, upstreams):
    errors: list[str] = []
    page = new_page(DESKTOP, errors)

    # Sign in: a wrong key is refused, the admin key is accepted.
    page.goto(console.url + "/")
    sign_in_with_key(page, "nx_000000000000_" + "x" * 43)
    page.get_by_role("alert").filter(has_text="Sign-in failed").wait_for()
    shot(page, "01-sign-in-refused")
    errors.clear()  # the refused key's 401 is logged by the browser, as it should be
    sign_in_with_key(page, console.keys["acme"])
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.get_by_text("No inferences in this time range yet").wait_for()
    shot(page, "02-dashboard-empty")

    # Chat: tokens arrive one by one (the fake upstream waits between chunks), then cost and receipt.
    upstreams.script("console-e2e").then(drip(0.25))
    page.get_by_role("navigation").get_by_role("link", name="Chat").click()
    page.get_by_label("Model").wait_for()
    page.wait_for_function("document.querySelector('#model') && document.querySelector('#model').value === 'gpt-test'")
    page.get_by_label("Message").fill("Say hello")
    page.get_by_role("button", name="Send").click()
    answer = page.get_by_test_id("msg-assistant")
    page.wait_for_function(
        "() => { const t = document.querySelector('[data-testid=msg-assistant] .msg-text'); "
        "return t && t.textContent.replace('▍','').trim().length > 0 && document.querySelector('.cursor'); }")
    partial = answer.locator(".msg-text").inner_text().replace("▍", "").strip()
    shot(page, "03-chat-streaming")
    assert partial and partial != REPLY, f"expected a partial answer while streaming, saw {partial!r}"
    page.get_by_test_id("receipt").wait_for()
    page.get_by_test_id("cost").wait_for()
    assert answer.locator(".msg-text").inner_text().strip() == REPLY
    assert "USD" in page.get_by_test_id("cost").inner_text()
    shot(page, "04-chat-done")
    [completed] = [e for e in console.container.ledger.read(1, 1000) if e.type == "InferenceCompleted"]
    assert str(completed.event_id)[:8] in page.get_by_test_id("receipt").inner_text()

    # The inference log and the dashboard read the read models (audit index, usage), which the NATS
    # consumers keep up to date under `nexus up`; here the test brings them to the ledger head.
    console.project()

    # The inference log shows it.
    page.get_by_role("navigation").get_by_role("link", name="Inference log").click()
    row = page.get_by_test_id("log-row")
    try:
        row.first.wait_for()
    finally:
        shot(page, "05-inference-log")
    assert row.count() == 1 and "gpt-upstream" in row.first.inner_text()
    row.first.get_by_role("button", name="Details").click()
    page.get_by_role("dialog", name="Inference details").wait_for()
    shot(page, "05-inference-log")
    page.get_by_role("button", name="Close").click()

    # The dashboard counts it.
    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    page.get_by_role("button", name="Refresh").click()
    totals = page.get_by_label("Totals")
    totals.get_by_text("Inferences").wait_for()
    page.wait_for_function("document.querySelectorAll('.recharts-surface').length >= 3")
    assert re.search(r"Inferences\s*1\b", totals.inner_text()), totals.inner_text()
    page.locator(".recharts-bar-rectangle").first.hover()
    page.locator(".recharts-tooltip-wrapper").first.wait_for(state="visible")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    csv = Path(download.value.path()).read_text()
    assert csv.startswith("start,requests,errors") and ",1," in csv
    shot(page, "06-dashboard")

    # Trust Center: verify the chat's receipt in the browser, straight from the receipt badge.
    page.get_by_role("navigation").get_by_role("link", name="Chat").click()
    page.goto(console.url + f"/trust?event={completed.event_id}")
    page.get_by_role("button", name="Verify").click()
    verdict = page.get_by_test_id("verdict")
    verdict.wait_for()
    assert verdict.inner_text().startswith("Verified"), verdict.inner_text()
    assert verdict.inner_text().count("✔") == 4
    page.get_by_role("table", name="Checkpoints").wait_for()
    shot(page, "07-trust-center")

    # API keys: create (secret shown once), it works, revoke, it stops working.
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("e2e-key")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("secret").inner_text().strip()
    assert secret.startswith("nx_")
    page.get_by_test_id("key-e2e-key").wait_for()
    shot(page, "08-api-key-created")
    with console.http(secret) as http:
        assert http.get("/v1/models").status_code == 200
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Revoke e2e-key").click()
    page.get_by_test_id("key-e2e-key").get_by_text("revoked").wait_for()
    shot(page, "09-api-key-revoked")
    with console.http(secret) as http:
        assert http.get("/v1/models").status_code == 401

    # Settings: the tenant's recording mode, recorded in the ledger and followed by the gateway at once.
    page.get_by_role("navigation").get_by_role("link", name="Settings").click()
    deferred, strict = (page.get_by_role("radio", name=re.compile(f"^{m}")) for m in ("Deferred", "Strict"))
    deferred.wait_for()
    assert deferred.is_checked() and not strict.is_checked()
    strict.check()
    page.get_by_test_id("recording-saved").wait_for()
    assert strict.is_checked()
    assert console.container.deployments.recording("acme") == "strict"
    shot(page, "09b-settings-strict-recording")

    # Settings: the deployments, with which credential each holds and a certificate that expires soon flagged.
    soon = self_signed(ENTRA_CERTIFICATE_KEY, valid_for_days=11)  # valid from a day ago: 10 days left
    console.container.deployments.configure(
        "acme", name="azure-cert", provider="azure", model="gpt-4o", model_name="gpt-azure", price=PRICE,
        base_url="https://acme.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21",
        api_key=f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{pem_bundle(ENTRA_CERTIFICATE_KEY, soon)}")
    page.reload()
    page.get_by_test_id("deployment-primary").get_by_text("API key").wait_for()
    certificate = page.get_by_test_id("deployment-azure-cert")
    certificate.get_by_text("Entra ID certificate").wait_for()
    assert thumbprint_s256(soon)[:12] in certificate.inner_text()
    assert certificate.get_by_test_id("expires-soon").inner_text().startswith("expires in 9 days")
    shot(page, "09c-settings-deployments")

    assert errors == [], errors


def test_phone_width_navigation_and_spa_routes(new_page, console):
    page = new_page(PHONE)
    page.goto(console.url + "/keys")  # a deep link is served index.html, then asks for sign-in
    page.get_by_label("Password").wait_for()
    shot(page, "10-phone-sign-in")
    sign_in_with_key(page, console.keys["acme"])
    page.get_by_role("heading", name="API keys").wait_for()
    assert not page.get_by_role("navigation").is_visible()
    page.get_by_role("button", name="Toggle navigation").click()
    page.get_by_role("navigation").get_by_role("link", name="Trust Center").click()
    page.get_by_role("heading", name="Trust Center").wait_for()
    page.get_by_role("table", name="Checkpoints").or_(page.get_by_text("No checkpoint signed yet")).first.wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone: {width}px"
    shot(page, "10-phone-trust-center")
    page.get_by_role("button", name="Toggle navigation").click()
    page.get_by_role("navigation").get_by_role("link", name="Cost & usage").click()
    page.get_by_text("No spend in this range yet").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "10-phone-costs")

    # A credential revoked elsewhere ends the session at the next request, with a word why.
    key_id = console.keys["acme"].split("_")[1]
    console.data(f'mutation {{ revokeApiKey(keyId: "{key_id}") {{ position }} }}')
    page.get_by_role("button", name="Refresh").click()
    page.get_by_role("status").filter(has_text="Your session ended").wait_for()
    page.get_by_role("button", name="Sign in").wait_for()
    # The API's own paths never fall back to the console.
    with console.http(console.keys["acme"]) as http:
        assert http.get("/v1/nope").status_code == 404
        assert http.get("/healthz").json()["status"] == "ok"
        assert http.get("/chat").headers["content-type"].startswith("text/html")
        assert http.get("/assets/missing.js").status_code == 404


SSO = "mutation($i: ConfigureSsoProviderInput!) { configureSsoProvider(input: $i) { position } }"
SESSION_TOKEN = "JSON.parse(sessionStorage.getItem('nexus.session')).token"


def test_password_sign_in_costs_monaco_audit_bundle_and_tenant_switch(new_page, console, upstreams):
    acme = user_with_password(console, "admin", tenant="acme")
    globex = user_with_password(console, "admin", tenant="globex")
    errors: list[str] = []
    console.data(SSO, {"i": {"providerId": "corp", "name": "Corp IdP", "kind": "oidc", "issuer": "https://idp.example.com",
                             "clientId": "nexus", "clientSecret": "s3cret", "allowedDomains": ["example.com"]}})
    page = new_page(DESKTOP, errors)
    page.clock.install()  # time flows as usual until the test fast-forwards it (token renewal below)
    elsewhere: list[str] = []  # Monaco and everything else come from our own origin, never a CDN
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(console.url) else None)
    tenant = page.get_by_label("Tenant", exact=True)

    # The sign-in page shows the SSO buttons of the tenant typed in, and none for a tenant without SSO.
    page.goto(console.url + "/")
    page.get_by_label("Tenant", exact=True).fill("acme")
    sso = page.get_by_role("link", name="Sign in with Corp IdP")
    assert sso.get_attribute("href") == "/v1/auth/sso/corp/login?tenant=acme&next=/"
    shot(page, "11-sign-in-sso-buttons")
    page.get_by_label("Tenant", exact=True).fill("globex")
    sso.wait_for(state="detached")
    assert page.get_by_role("group", name="Single sign-on").count() == 0

    # Password sign-in (the default method): a wrong password is refused, the right one opens the console.
    _sign_in_with_password(page, "acme", acme["email"], "not the password at all")
    page.get_by_role("alert").filter(has_text="Sign-in failed").wait_for()
    errors.clear()  # the refused sign-in's 401 is logged by the browser, as it should be
    _sign_in_with_password(page, "acme", acme["email"], PASSWORD)
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert tenant.input_value() == "acme"
    shot(page, "11-password-signed-in")

    # A minute before the 10-minute access token expires, the console renews it (POST /v1/auth/refresh).
    first_token = page.evaluate(SESSION_TOKEN)
    page.clock.fast_forward("09:30")
    page.wait_for_function(f"{SESSION_TOKEN} !== {json.dumps(first_token)}")
    # After a reload the page has forgotten the refresh token; the HttpOnly cookie renews the session.
    second_token = page.evaluate(SESSION_TOKEN)
    page.reload()
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.clock.fast_forward("09:30")
    page.wait_for_function(f"{SESSION_TOKEN} !== {json.dumps(second_token)}")

    # The signed-in user chats through the gateway with its access token (no API key), then sees the cost.
    page.get_by_role("navigation").get_by_role("link", name="Chat").click()
    page.wait_for_function("document.querySelector('#model') && document.querySelector('#model').value === 'gpt-test'")
    page.get_by_label("Message").fill("Say hello")
    page.get_by_role("button", name="Send").click()
    page.get_by_test_id("receipt").wait_for()
    entries = console.container.ledger.read(1, 1000)
    [completed] = [e for e in entries if e.type == "InferenceCompleted"]
    [requested] = [e for e in entries if e.type == "InferenceRequested"]
    assert json.loads(requested.payload)["api_key_id"] == f"user:{acme['user_id']}"
    console.project()

    page.get_by_role("navigation").get_by_role("link", name="Cost & usage").click()
    page.get_by_role("heading", name="Cost & usage").wait_for()
    per_model = page.get_by_role("table", name="Spend per model")
    per_model.wait_for()
    assert "test-2026-11" in per_model.inner_text()  # the price-table version behind the figure
    row = page.get_by_test_id("cost-day-row")
    assert row.count() == 1 and "USD" in row.inner_text() and "test-2026-11" in row.inner_text()
    assert page.get_by_test_id("total-USD").inner_text().endswith("USD")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    header, line = Path(download.value.path()).read_text().splitlines()
    assert header.startswith("day,provider,model,currency,price_table_version")
    assert ",openai,gpt-upstream,USD,test-2026-11,1," in line
    shot(page, "12-costs")

    # Trust Center: the verified receipt is shown in Monaco (bundled, lazily loaded, no CDN).
    page.goto(console.url + f"/trust?event={completed.event_id}")
    page.get_by_role("button", name="Verify").click()
    assert page.get_by_test_id("verdict").inner_text().startswith("Verified")
    receipt_view = page.get_by_role("region", name="Receipt JSON")
    receipt_view.locator(".monaco-editor .view-lines").wait_for()
    page.wait_for_function("document.querySelector('.monaco-editor .view-lines').innerText.includes('ledger_id')")
    shot(page, "13-trust-center-receipt-monaco")

    # The audit bundle downloads and verifies offline, and holds this tenant's entries only.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download audit bundle").click()
    assert download.value.suggested_filename == "acme-audit.nexus"
    raw = Path(download.value.path()).read_bytes()
    verified = verify_bytes(raw)
    bundle = load_bundle(raw)
    assert verified.entries > 0 and {e.tenant_id for e in bundle.entries} == {"acme"}
    assert str(completed.event_id) in {e.event_id for e in bundle.entries}
    page.get_by_text("acme-audit.nexus").wait_for()
    page.get_by_label("Stream (optional)").fill(completed.stream_id)  # narrowed to the inference's stream
    with page.expect_download() as download:
        page.get_by_role("button", name="Download audit bundle").click()
    narrowed = load_bundle(verify_and_read(Path(download.value.path())))
    assert {e.stream_id for e in narrowed.entries} == {completed.stream_id} and len(narrowed.entries) >= 2

    # Switch tenant: sign in to another (the page stays); the list then offers both, switching back is prefilled.
    tenant.select_option(label="Another tenant…")
    _sign_in_with_password(page, "globex", globex["email"], PASSWORD)
    page.get_by_role("heading", name="Trust Center").wait_for()
    assert tenant.input_value() == "globex"
    shot(page, "14-switched-to-globex")
    tenant.select_option("acme")
    assert page.get_by_label("Tenant", exact=True).input_value() == "acme"  # the sign-in form, prefilled
    assert page.get_by_label("Email").input_value() == acme["email"]
    shot(page, "14-switch-back-prefilled")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Trust Center").wait_for()
    assert tenant.input_value() == "acme"

    # Sign-out revokes the session: its access token no longer works anywhere.
    token = page.evaluate(SESSION_TOKEN)
    with page.expect_response("**/v1/auth/sign-out") as signed_out:
        page.get_by_role("button", name="Sign out").click()
    assert signed_out.value.status == 204
    page.get_by_role("button", name="Sign in").wait_for()
    with console.http(token) as http:
        assert http.post("/graphql", json={"query": "{ me { tenantId } }"}).json().get("errors")
    assert errors == [], errors
    assert elsewhere == [], elsewhere


def verify_and_read(path: Path) -> bytes:
    raw = path.read_bytes()
    verify_bytes(raw)
    return raw


def _sign_in_with_password(page, tenant: str, email: str, password: str) -> None:
    page.get_by_label("Tenant", exact=True).fill(tenant)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_single_sign_on_from_the_button_to_a_session(new_page, console):
    """The whole OpenID Connect dance in the browser, against a local provider that signs its user in at once."""
    with FakeOidcProvider("nexus-console", "s3cret", TestUser("ada@example.com")) as idp:
        console.data(SSO, {"i": {"providerId": "corp", "name": "Corp IdP", "kind": "oidc", "issuer": idp.issuer,
                                 "clientId": "nexus-console", "clientSecret": "s3cret",
                                 "allowedDomains": ["example.com"], "defaultRole": "developer"}})
        errors: list[str] = []
        page = new_page(DESKTOP, errors)
        page.goto(console.url + "/")
        page.get_by_label("Tenant", exact=True).fill("acme")
        page.get_by_role("link", name="Sign in with Corp IdP").click()  # to the provider and back to /
        page.get_by_role("heading", name="Dashboard").wait_for()
        assert page.get_by_label("Tenant", exact=True).input_value() == "acme"
        session = page.evaluate("JSON.parse(sessionStorage.getItem('nexus.session'))")
        assert session["method"] == "sso" and session["subject"].startswith("user:")
        shot(page, "15-signed-in-with-sso")

        # A tenant switch may go by SSO too: back from the provider, the previous session is signed out.
        globex = user_with_password(console, "admin", tenant="globex")
        with page.expect_response("**/v1/auth/sign-out"):
            page.get_by_role("button", name="Sign out").click()
        page.get_by_role("button", name="Sign in").wait_for()
        _sign_in_with_password(page, "globex", globex["email"], PASSWORD)
        page.get_by_role("heading", name="Dashboard").wait_for()
        before = page.evaluate(SESSION_TOKEN)
        page.get_by_label("Tenant", exact=True).select_option("acme")
        page.get_by_role("link", name="Sign in with Corp IdP").click()
        page.get_by_role("heading", name="Dashboard").wait_for()
        assert page.get_by_label("Tenant", exact=True).input_value() == "acme"
        with console.http(before) as http:
            assert http.post("/graphql", json={"query": "{ me { tenantId } }"}).json().get("errors")
        assert errors == [], errors
