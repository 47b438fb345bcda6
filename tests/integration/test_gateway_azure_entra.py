"""Azure OpenAI deployments that sign in with a Microsoft Entra ID app registration instead of an API key.

The gateway gets a token with the client-credentials grant from a fake Entra ID (the harness points
NEXUS_ENTRA_AUTHORITY at it), with the app's client secret or with a client assertion signed by its
certificate's key (which the fake checks: thumbprint, PS256 signature, audience, issuer, replay), sends it
as a bearer token, keeps it until shortly before it expires, and
fetches a new one when the upstream refuses it. The fake Azure refuses any token Entra did not issue or
that has expired.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from domain.deployments import InvalidDeployment
from tests.fakes.certificates import pem_bundle, pkcs12_bundle, rsa_key, self_signed, thumbprint_s256
from tests.fakes.harness import PRICE, gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import (
    ENTRA_CERTIFICATE,
    ENTRA_CERTIFICATE_KEY,
    ENTRA_CLIENT_ID,
    ENTRA_DIRECTORY,
    ENTRA_SCOPE,
    ENTRA_SECRET,
    REPLY,
    EntraFake,
)

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]
APP_REGISTRATION = f"entra:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{ENTRA_SECRET}"
CERTIFICATE_BUNDLE = pem_bundle(ENTRA_CERTIFICATE_KEY, ENTRA_CERTIFICATE)
CERTIFICATE_REGISTRATION = f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{CERTIFICATE_BUNDLE}"
AZURE_URL = "https://acme.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21"


@pytest.fixture
def entra(gw) -> EntraFake:
    gw.upstreams.entra = EntraFake()
    return gw.upstreams.entra


def deploy_azure(gw, name: str = "azure-entra", credential: str = APP_REGISTRATION, **options) -> str:
    return gw.deploy(name, provider="azure", model_name="gpt-azure", model="gpt-4o", region="westeurope",
                     api_key=credential, **options)


def test_whole_streamed_and_embedding_calls_carry_one_entra_token_and_no_api_key(gw, entra):
    upstream = deploy_azure(gw)
    gw.deploy("azure-embed", provider="azure", model_name="embed-azure", upstream=upstream, api_key=APP_REGISTRATION)
    client = gw.client()

    assert client.chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    chunks = list(client.chat.completions.create(model="gpt-azure", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert len(client.embeddings.create(model="embed-azure", input="one two").data[0].embedding) == 4

    [asked] = entra.token_requests  # one token for the three calls
    assert asked == {"directory": ENTRA_DIRECTORY, "grant_type": "client_credentials", "client_id": ENTRA_CLIENT_ID,
                     "client_secret": ENTRA_SECRET, "scope": ENTRA_SCOPE}
    sent = gw.script(upstream).requests
    assert {r["headers"]["authorization"] for r in sent} == {f"Bearer {next(iter(entra.issued))}"}
    assert not any("api-key" in r["headers"] for r in sent) and not any(r.get("refused") for r in sent)
    assert ENTRA_SECRET not in str(gw.container.deployments.list("acme"))
    assert [p["provider"] for p in gw.payloads("InferenceCompleted")] == ["azure"] * 3


def test_a_token_is_renewed_before_it_expires(gw, entra):
    entra.expires_in = 1  # renewed a tenth of its life before the end
    upstream = deploy_azure(gw)
    client = gw.client()
    client.chat.completions.create(model="gpt-azure", messages=HELLO)
    client.chat.completions.create(model="gpt-azure", messages=HELLO)
    time.sleep(1.0)
    client.chat.completions.create(model="gpt-azure", messages=HELLO)

    assert len(entra.token_requests) == 2
    tokens = [r["headers"]["authorization"] for r in gw.script(upstream).requests]
    assert tokens[0] == tokens[1] != tokens[2]
    assert not any(r.get("refused") for r in gw.script(upstream).requests)


def test_requests_that_need_a_token_at_once_share_one_fetch(gw, entra):
    entra.delay_s = 0.3
    deploy_azure(gw)
    client = gw.client()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.chat.completions.create(model="gpt-azure", messages=HELLO), range(8)))
    assert [a.choices[0].message.content for a in answers] == [REPLY] * 8
    assert len(entra.token_requests) == 1


def test_a_secret_entra_refuses_is_an_auth_failure_that_falls_back(gw, entra):
    upstream = deploy_azure(gw, credential=f"entra:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:an-expired-secret")
    gw.deploy("azure-key", provider="azure", model_name="gpt-azure", upstream=upstream, priority=1)
    assert gw.client().chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert [(a["deployment"], a["outcome"], a["status"]) for a in p["attempts"]] == [
        ("azure-entra", "auth", 401), ("azure-key", "ok", 200)]
    assert "AADSTS7000215" in p["attempts"][0]["detail"] and "an-expired-secret" not in str(p)
    assert [r["headers"].get("api-key") for r in gw.script(upstream).requests] == ["sk-upstream-secret"]


def test_a_token_the_upstream_refuses_is_dropped_and_the_next_request_signs_in_again(gw, entra):
    upstream = deploy_azure(gw, max_retries=0)
    client = gw.client()
    client.chat.completions.create(model="gpt-azure", messages=HELLO)
    entra.issued.clear()  # revoked at Azure's end, long before it expires here

    with gw.http() as http:
        refused = http.post("/v1/chat/completions", json={"model": "gpt-azure", "messages": HELLO})
    assert refused.status_code == 502
    assert client.chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY

    assert len(entra.token_requests) == 2
    assert [r.get("refused", False) for r in gw.script(upstream).requests] == [False, True, False]
    assert [p["attempts"][0]["outcome"] for p in gw.payloads("InferenceFailed")] == ["auth"]


@pytest.mark.parametrize("credential", [
    "entra:contoso.onmicrosoft.com:not-a-client-id:s3cr3t-value",
    f"entra:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:",
    "entra:",
])
def test_a_malformed_app_registration_is_refused_without_being_echoed(gw, credential):
    with pytest.raises(InvalidDeployment, match="entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET") as refused:
        gw.container.deployments.configure(
            "acme", name="az", provider="azure", model="gpt-4o", price=PRICE, api_key=credential, base_url=AZURE_URL)
    assert "s3cr3t" not in str(refused.value) and "<hidden>" in str(refused.value)
    assert gw.container.deployments.list("acme") == []


# --- certificate credentials ----------------------------------------------------------------------------


def test_a_certificate_credential_signs_in_with_a_signed_client_assertion_and_sends_no_secret(gw, entra):
    upstream = deploy_azure(gw, credential=CERTIFICATE_REGISTRATION)
    client = gw.client()
    assert client.chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    assert client.chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY

    [asked] = entra.token_requests  # one sign-in for both calls
    assert "client_secret" not in asked
    assert asked["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(asked["client_assertion"])
    claims = jwt.decode(asked["client_assertion"], options={"verify_signature": False})
    assert (header["alg"], header["x5t#S256"]) == ("PS256", thumbprint_s256(ENTRA_CERTIFICATE))
    assert claims["aud"] == f"{gw.upstreams.url}/entra/{ENTRA_DIRECTORY}/oauth2/v2.0/token"
    assert claims["iss"] == claims["sub"] == ENTRA_CLIENT_ID and 0 < claims["exp"] - claims["nbf"] <= 600
    assert {r["headers"]["authorization"] for r in gw.script(upstream).requests} == {
        f"Bearer {next(iter(entra.issued))}"}
    # the bundle is sealed: neither the listing nor the ledger shows any of it, only which certificate it is
    assert CERTIFICATE_BUNDLE[:40] not in str(gw.container.deployments.list("acme"))
    assert not any(CERTIFICATE_BUNDLE[:40] in str(p) for p in gw.payloads("DeploymentConfigured"))
    facts = {"kind": "entra_certificate", "directory": ENTRA_DIRECTORY, "client_id": ENTRA_CLIENT_ID,
             "certificate_thumbprint_s256": thumbprint_s256(ENTRA_CERTIFICATE),
             "certificate_not_after": f"{ENTRA_CERTIFICATE.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"}
    [listed] = [d for d in gw.container.deployments.list("acme") if d["name"] == "azure-entra"]
    assert listed["credential_facts"] == facts


def test_a_deployment_configured_again_without_a_credential_keeps_its_credential_and_its_facts(gw, entra):
    deploy_azure(gw, credential=CERTIFICATE_REGISTRATION)
    gw.container.deployments.configure("acme", name="azure-entra", provider="azure", model_name="gpt-azure",
                                       model="gpt-4o", price=PRICE, priority=3,
                                       base_url=gw.container.deployments.list("acme")[0]["base_url"])
    [listed] = gw.container.deployments.list("acme")
    assert (listed["priority"], listed["credential_facts"]["kind"]) == (3, "entra_certificate")
    assert gw.client().chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    assert "client_assertion" in entra.token_requests[0]


def test_a_pkcs12_file_as_key_vault_holds_it_signs_in_as_its_pem_bundle_does(gw, entra):
    intermediate_key = rsa_key()
    pfx = pkcs12_bundle(ENTRA_CERTIFICATE_KEY, ENTRA_CERTIFICATE, self_signed(intermediate_key, name="issuing-ca"))
    deploy_azure(gw, credential=f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{pfx}")
    assert gw.client().chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    [asked] = entra.token_requests
    assert jwt.get_unverified_header(asked["client_assertion"])["x5t#S256"] == thumbprint_s256(ENTRA_CERTIFICATE)
    [listed] = gw.container.deployments.list("acme")
    assert listed["credential_facts"]["certificate_thumbprint_s256"] == thumbprint_s256(ENTRA_CERTIFICATE)


def test_each_sign_in_signs_a_fresh_assertion_that_entra_has_not_seen(gw, entra):
    entra.expires_in = 1
    deploy_azure(gw, credential=CERTIFICATE_REGISTRATION)
    client = gw.client()
    client.chat.completions.create(model="gpt-azure", messages=HELLO)
    time.sleep(1.0)
    client.chat.completions.create(model="gpt-azure", messages=HELLO)
    assertions = [r["client_assertion"] for r in entra.token_requests]
    assert len(assertions) == 2 and len(entra.assertion_ids) == 2  # a replayed jti would have been refused


def test_a_certificate_entra_does_not_know_is_an_auth_failure_that_falls_back(gw, entra):
    stranger = rsa_key()
    credential = f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{pem_bundle(stranger, self_signed(stranger))}"
    upstream = deploy_azure(gw, credential=credential)
    gw.deploy("azure-key", provider="azure", model_name="gpt-azure", upstream=upstream, priority=1)
    assert gw.client().chat.completions.create(model="gpt-azure", messages=HELLO).choices[0].message.content == REPLY
    [p] = gw.payloads("InferenceCompleted")
    assert [(a["deployment"], a["outcome"], a["status"]) for a in p["attempts"]] == [
        ("azure-entra", "auth", 401), ("azure-key", "ok", 200)]
    assert "AADSTS700027" in p["attempts"][0]["detail"]


_OTHER_KEY = rsa_key()
_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_SHORT_KEY = rsa_key(1024)


@pytest.mark.parametrize(("bundle", "reason"), [
    (pem_bundle(ENTRA_CERTIFICATE_KEY, self_signed(ENTRA_CERTIFICATE_KEY, valid_from_days=-400)),
     "expired on"),
    (pem_bundle(ENTRA_CERTIFICATE_KEY, self_signed(ENTRA_CERTIFICATE_KEY, valid_from_days=2)), "valid from"),
    (pem_bundle(ENTRA_CERTIFICATE_KEY, self_signed(_OTHER_KEY)), "matches none of the bundle's 1 certificate"),
    (pem_bundle(_EC_KEY, self_signed(_EC_KEY)), "an RSA private key"),
    (pem_bundle(_SHORT_KEY, self_signed(_SHORT_KEY)), "at least 2048 bits, got 1024"),
    (pem_bundle(ENTRA_CERTIFICATE_KEY, ENTRA_CERTIFICATE, password=b"hunter2"), "the private key is encrypted"),
    (base64.b64encode(base64.b64decode(CERTIFICATE_BUNDLE).split(b"-----BEGIN CERTIFICATE")[0]).decode(),
     "a certificate in the bundle"),
    ("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==", "one private key in the PEM bundle, found 0"),
    ("bm90IGEgUEVNIGJ1bmRsZQ==", "a PEM bundle or a PKCS#12 file, got neither"),
    (pkcs12_bundle(ENTRA_CERTIFICATE_KEY, ENTRA_CERTIFICATE, password=b"hunter2"), "PKCS#12 file is password-prot"),
    (pkcs12_bundle(ENTRA_CERTIFICATE_KEY, None, self_signed(_OTHER_KEY)), "matches none of the bundle's 1 certificate"),
])
def test_a_certificate_credential_entra_would_refuse_is_refused_when_configured_saying_why(gw, bundle, reason):
    with pytest.raises(InvalidDeployment, match=reason) as refused:
        gw.container.deployments.configure(
            "acme", name="az", provider="azure", model="gpt-4o", price=PRICE, base_url=AZURE_URL,
            api_key=f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{bundle}")
    assert bundle[:40] not in str(refused.value) and "<hidden>" in str(refused.value)
    assert gw.container.deployments.list("acme") == []


def test_the_cli_lists_which_certificate_a_deployment_signs_in_with_and_flags_one_that_expires_soon(gw, monkeypatch):
    from typer.testing import CliRunner

    from api.cli import app

    soon = self_signed(ENTRA_CERTIFICATE_KEY, valid_for_days=11)  # valid from a day ago: 10 days left
    monkeypatch.setenv("NEXUS_DATABASE_URL", gw.container.settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    monkeypatch.setenv("AZURE_CREDENTIAL",
                       f"entra-cert:{ENTRA_DIRECTORY}:{ENTRA_CLIENT_ID}:{pem_bundle(ENTRA_CERTIFICATE_KEY, soon)}")
    runner = CliRunner()
    added = runner.invoke(app, ["deployments", "add", "az", "--tenant", "acme", "--provider", "azure", "--model",
                                "gpt-4o", "--base-url", AZURE_URL, "--input-price", "1", "--output-price", "2",
                                "--price-version", "v1", "--api-key-env", "AZURE_CREDENTIAL"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["deployments", "list", "--tenant", "acme"]).output
    assert f"sealed (entra_certificate {thumbprint_s256(soon)[:12]}... of app {ENTRA_CLIENT_ID}" in listed
    assert f"valid until {soon.not_valid_after_utc:%Y-%m-%d} EXPIRES IN 9 DAYS" in listed
