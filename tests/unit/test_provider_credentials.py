"""Credentials that are more than an API key, told apart by their shape and never shown back: Bedrock's IAM
key pairs, and Azure's Microsoft Entra ID app registrations, by secret or certificate (whose cloud follows the
endpoint's host)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.deployments import (
    EntraClient,
    InvalidDeployment,
    aws_key_pair,
    check_credential,
    credential_facts,
    entra_client,
    entra_endpoints,
    fold,
    is_entra_credential,
    new_deployment,
)
from domain.pricing import Price
from tests.fakes.certificates import pem_bundle, rsa_key, self_signed, thumbprint_s256

KEY_IDS = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=128)
SECRETS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=", min_size=16, max_size=256)
API_KEYS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_", min_size=1, max_size=300)
PRICE = Price(input=1, output=1, currency="USD", version="t")


@given(KEY_IDS, SECRETS, st.none() | SECRETS)
def test_a_key_pair_is_read_back_whole_with_or_without_its_session_token(key_id, secret, token):
    credential = f"{key_id}:{secret}" + (f":{token}" if token else "")
    check_credential("bedrock", credential, kept=False)
    assert aws_key_pair(credential) == (key_id, secret, token)


@given(API_KEYS)
def test_anything_without_a_colon_is_a_bedrock_api_key(api_key):
    check_credential("bedrock", api_key, kept=False)
    assert aws_key_pair(api_key) is None


@pytest.mark.parametrize("credential", ["AKIA:secret", "akiaexample0000000:secret-access-key-00", "A:B:C:D",
                                        "AKIAEXAMPLE000000:secret with spaces 000"])
def test_a_malformed_key_pair_is_refused_without_being_echoed(credential):
    with pytest.raises(InvalidDeployment) as refused:
        check_credential("bedrock", credential, kept=False)
    assert credential not in str(refused.value) and "<hidden>" in str(refused.value)


def test_only_providers_that_would_use_the_hosts_credentials_need_one():
    check_credential("openai", None, kept=False)
    check_credential("bedrock", None, kept=True)  # replacing a deployment keeps its recorded credential
    with pytest.raises(InvalidDeployment, match="never uses the host's own"):
        check_credential("bedrock", None, kept=False)


def test_the_default_endpoint_is_the_regions_and_a_given_one_is_kept():
    assert new_deployment(name="l", provider="bedrock", model="meta.llama3-3-70b-instruct-v1:0", price=PRICE,
                          region="eu-central-1").base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert new_deployment(name="l", provider="bedrock", model="m", price=PRICE, region="us-gov-west-1",
                          base_url="https://vpce-0abc.bedrock-runtime.us-gov-west-1.vpce.amazonaws.com/").base_url == (
        "https://vpce-0abc.bedrock-runtime.us-gov-west-1.vpce.amazonaws.com")


def test_an_app_registration_is_read_back_and_anything_else_for_azure_is_an_api_key():
    client_id = "0F3A1C52-8D3E-4A7B-9C1D-2E5F6A7B8C9D"
    credential = f"entra:contoso.onmicrosoft.com:{client_id}:se:cr~et"
    check_credential("azure", credential, kept=False)
    assert entra_client(credential) == EntraClient("contoso.onmicrosoft.com", client_id.lower(), "se:cr~et")
    assert entra_client("0123456789abcdef0123456789abcdef") is None


def test_a_certificate_registration_is_read_back_with_its_thumbprint_and_never_shows_its_key():
    key = rsa_key()
    certificate = self_signed(key)
    client_id = "0F3A1C52-8D3E-4A7B-9C1D-2E5F6A7B8C9D"
    credential = f"entra-cert:contoso.onmicrosoft.com:{client_id}:{pem_bundle(key, certificate)}"
    check_credential("azure", credential, kept=False)
    client = entra_client(credential)
    assert client is not None and client.secret == "" and client.client_id == client_id.lower()
    assert client.certificate is not None and client.certificate.thumbprint_s256 == thumbprint_s256(certificate)
    assert client.certificate.not_after == certificate.not_valid_after_utc
    assert "PRIVATE" not in repr(client) and "private_key" not in repr(client)
    # a bundle that cannot sign in is not an API key either: the gateway refuses to send it as one
    assert entra_client(credential[:-20]) is None and is_entra_credential(credential[:-20])


def test_the_facts_shown_about_a_credential_name_it_without_any_of_its_secret():
    client_id = "0f3a1c52-8d3e-4a7b-9c1d-2e5f6a7b8c9d"
    assert credential_facts("openai", "sk-live-123") == {"kind": "api_key"}
    assert credential_facts("bedrock", "ABSKZmFrZUJlZHJvY2s=") == {"kind": "bedrock_api_key"}
    assert credential_facts("bedrock", "AKIAFAKE000000000001:fake+secret/access/key/000") == {
        "kind": "aws_key_pair", "access_key_id": "AKIAFAKE000000000001", "session": False}
    assert credential_facts("bedrock", "AKIAFAKE000000000001:fake+secret/access/key/000:tok")["session"] is True
    assert credential_facts("azure", f"entra:contoso.onmicrosoft.com:{client_id}:s3cr3t~x") == {
        "kind": "entra_secret", "directory": "contoso.onmicrosoft.com", "client_id": client_id}
    assert credential_facts("azure", "an-azure-api-key") == {"kind": "api_key"}


@given(KEY_IDS, SECRETS, st.booleans())
def test_no_fact_about_a_key_pair_contains_its_secret(key_id, secret, with_session):
    assume(secret not in key_id)  # the key id is shown, by design
    credential = f"{key_id}:{secret}" + (":SESSION-TOKEN-VALUE" if with_session else "")
    check_credential("bedrock", credential, kept=False)
    shown = str(credential_facts("bedrock", credential))
    assert secret not in shown and "SESSION-TOKEN-VALUE" not in shown


@pytest.mark.parametrize(("endpoint", "authority", "scope"), [
    ("https://acme.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21",
     "https://login.microsoftonline.com", "https://cognitiveservices.azure.com/.default"),
    ("https://acme.openai.azure.us/openai/deployments/gpt-4o?api-version=2024-10-21",
     "https://login.microsoftonline.us", "https://cognitiveservices.azure.us/.default"),
    ("https://acme.openai.azure.cn:443/openai/deployments/gpt-4o?api-version=2024-10-21",
     "https://login.chinacloudapi.cn", "https://cognitiveservices.azure.cn/.default"),
    ("https://azure.us.example.com/openai/deployments/x?api-version=1",
     "https://login.microsoftonline.com", "https://cognitiveservices.azure.com/.default"),
])
def test_the_entra_cloud_is_the_one_the_endpoint_is_in(endpoint, authority, scope):
    assert entra_endpoints(endpoint) == (authority, scope)


def test_a_deployment_recorded_before_credentials_had_facts_loads_without_them():
    recorded = new_deployment(name="old", provider="openai", model="gpt-4o-mini", price=PRICE).payload("acme")
    del recorded["credential_facts"]  # as DeploymentConfigured was written before the sixteenth session
    [(name, deployment)] = fold([("DeploymentConfigured", recorded)]).items()
    assert (name, deployment.credential_facts, deployment.public()["credential_facts"]) == ("old", None, None)


@given(st.binary(max_size=3000) | st.builds(lambda b: b"-----BEGIN PRIVATE KEY-----\n" + b, st.binary(max_size=2000)))
def test_any_bytes_as_a_certificate_bundle_are_refused_with_a_reason_never_a_crash(raw):
    credential = f"entra-cert:contoso.onmicrosoft.com:0f3a1c52-8d3e-4a7b-9c1d-2e5f6a7b8c9d:{base64.b64encode(raw).decode()}"
    with pytest.raises(InvalidDeployment, match="expected an Entra ID certificate credential: |expected entra:"):
        check_credential("azure", credential, kept=False)
    assert entra_client(credential) is None
