"""The pure rules of single sign-on (domain/sso.py): presets, what a provider's configuration must hold,
which asserted identities may enter a tenant, and where the browser may be sent afterwards."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import sso
from domain.rbac import UnknownRole
from domain.sso import FederatedIdentity, IdentityRefused, InvalidSsoProvider

SEALED = {"enc": "nexus-credential/v1"}


def provider(**overrides: object) -> sso.SsoProvider:
    fields: dict = {"provider_id": "corp", "name": "Corp", "kind": "oidc", "issuer": "https://id.example.com/",
                    "directory": None, "client_id": "c", "client_secret": SEALED,
                    "allowed_domains": ["Example.com"], "default_role": "viewer", **overrides}
    return sso.new_provider("acme", **fields)


def identity(email: str = "ada@example.com", verified: bool = True) -> FederatedIdentity:
    return FederatedIdentity("https://id.example.com", "sub-1", email, verified)


def test_presets_name_their_issuers():
    assert sso.issuer_for("google", None, None) == "https://accounts.google.com"
    assert sso.issuer_for("google", "https://accounts.google.com/", None) == "https://accounts.google.com"
    assert sso.issuer_for("azure", None, "6F1E1C2A-0000-4000-8000-0123456789AB") == \
        "https://login.microsoftonline.com/6f1e1c2a-0000-4000-8000-0123456789ab/v2.0"
    assert sso.issuer_for("okta", "https://acme.okta.com/", None) == "https://acme.okta.com"
    assert sso.issuer_for("oidc", "http://127.0.0.1:9000", None) == "http://127.0.0.1:9000"  # loopback only


@pytest.mark.parametrize("kind, issuer, directory, field", [
    ("saml", None, None, "kind"), ("azure", None, None, "directory"), ("okta", None, None, "issuer"),
    ("azure", None, "contoso.onmicrosoft.com", "directory"), ("google", "https://evil.example.com", None, "issuer"),
    ("oidc", "http://id.example.com", None, "issuer"), ("oidc", "https://id.example.com?x=1", None, "issuer"),
])
def test_an_issuer_that_cannot_be_trusted_is_refused_with_its_field(kind, issuer, directory, field):
    with pytest.raises(InvalidSsoProvider) as refused:
        sso.issuer_for(kind, issuer, directory)
    assert refused.value.field == field


def test_a_configuration_normalises_domains_and_trims_the_issuer():
    p = provider(allowed_domains=["Example.com", "example.com ", "corp.example.org"])
    assert p.allowed_domains == ("corp.example.org", "example.com")
    assert p.issuer == "https://id.example.com"
    assert "client_secret" not in p.public() and "client_id" not in p.public()


@pytest.mark.parametrize("overrides, field", [
    ({"provider_id": "Corp IdP"}, "providerId"), ({"allowed_domains": []}, "allowedDomains"),
    ({"allowed_domains": ["*.example.com"]}, "allowedDomains"), ({"default_role": "owner"}, "defaultRole"),
    ({"client_secret": None}, "clientSecret"), ({"client_id": ""}, "clientId"),
])
def test_a_configuration_missing_something_says_which_field(overrides, field):
    with pytest.raises(InvalidSsoProvider) as refused:
        provider(**overrides)
    assert refused.value.field == field


def test_an_unknown_default_role_is_refused():
    with pytest.raises(UnknownRole):
        provider(default_role="superuser")


def test_configured_then_removed_providers_fold_to_none():
    p = provider()
    events = [("SsoProviderConfigured", p.payload()),
              ("SsoProviderRemoved", sso.decide_remove({"corp": p}, "acme", "corp"))]
    assert sso.fold(events[:1]) == {"corp": p}
    assert sso.fold(events) == {}
    with pytest.raises(sso.UnknownSsoProvider):
        sso.decide_remove({}, "acme", "corp")


def test_a_verified_email_of_an_allowed_domain_is_admitted_lowercased():
    assert sso.admitted_email(provider(), identity("Ada@EXAMPLE.com")) == "ada@example.com"


@pytest.mark.parametrize("asserted, says", [
    (identity(verified=False), "has not verified"), (identity("ada@evil.example.net"), "is not allowed"),
    (identity(""), "did not assert an email"), (identity("not an email"), "not an email address"),
    (identity("ada@sub.example.com"), "is not allowed"),  # a subdomain is another domain
])
def test_other_identities_are_refused_with_the_reason(asserted, says):
    with pytest.raises(IdentityRefused, match=says):
        sso.admitted_email(provider(), asserted)


def test_google_admits_only_workspace_accounts_of_an_allowed_domain():
    google = provider(kind="google", issuer=None)
    workspace = FederatedIdentity(sso.GOOGLE_ISSUER, "1", "ada@example.com", True, hosted_domain="example.com")
    assert sso.admitted_email(google, workspace) == "ada@example.com"
    personal = FederatedIdentity(sso.GOOGLE_ISSUER, "2", "ada@example.com", True)  # a consumer account, same address
    with pytest.raises(IdentityRefused, match="not a Google Workspace account"):
        sso.admitted_email(google, personal)


@pytest.mark.parametrize("wanted, sent_to", [
    ("/dashboard?x=1", "/dashboard?x=1"), (None, "/"), ("", "/"), ("dashboard", "/"),
    ("//evil.example.com", "/"), ("/\\evil.example.com", "/"), ("https://evil.example.com/", "/"),
    ("/ok\r\nSet-Cookie: x=1", "/"), ("/" + "a" * 2001, "/"),
])
def test_after_sign_in_the_browser_only_goes_to_a_path_on_this_origin(wanted, sent_to):
    assert sso.safe_next(wanted) == sent_to


@given(st.one_of(st.text(max_size=60), st.text(alphabet="/\\:@.?#%evil.com \t\r\n", max_size=30)))
def test_no_next_whatsoever_leaves_this_origin(wanted):
    sent_to = sso.safe_next(wanted)
    resolved = urljoin("https://nexus.example.com/v1/auth/sso/callback", sent_to)
    assert resolved.startswith("https://nexus.example.com/"), (wanted, sent_to, resolved)


def test_only_a_provider_configured_by_an_owner_speaks_for_owners():
    plain, trusted = provider(), provider(admits_owners=True)
    with pytest.raises(IdentityRefused, match="owner"):
        sso.may_sign_in(plain, "boss@example.com", {"owner", "admin"})
    sso.may_sign_in(plain, "dev@example.com", {"admin"})  # no exception
    sso.may_sign_in(trusted, "boss@example.com", {"owner"})
    # the flag survives the ledger; events written before it existed admit no owner
    assert sso.fold([("SsoProviderConfigured", trusted.payload())])["corp"].admits_owners is True
    old = {k: v for k, v in trusted.payload().items() if k != "admits_owners"}
    assert sso.fold([("SsoProviderConfigured", old)])["corp"].admits_owners is False
