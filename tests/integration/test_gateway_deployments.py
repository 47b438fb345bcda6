"""Deployments are configured by events; credentials are sealed at rest and never shown; content is sealed."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from domain.deployments import InvalidDeployment, UnknownDeployment
from domain.identity import UnknownTenant
from tests.fakes.harness import PRICE, gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import REPLY

HELLO = [{"role": "user", "content": "Say hello"}]
SECRET = "sk-live-very-secret-credential"


def test_credentials_are_sealed_in_the_ledger_and_never_listed(gw):
    upstream = gw.deploy("primary", api_key=SECRET)
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    assert gw.script(upstream).requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    everything = b"".join(e.payload + e.metadata for e in gw.events())
    assert SECRET.encode() not in everything
    [configured] = gw.payloads("DeploymentConfigured")
    assert configured["credentials"]["enc"] == "nexus-credential/v1"
    [listed] = gw.container.deployments.list("acme")
    assert listed["has_credentials"] is True and "credentials" not in listed and SECRET not in str(listed)


def test_reconfiguring_keeps_the_credential_and_removing_stops_routing(gw):
    upstream = gw.deploy("primary", api_key=SECRET)
    gw.container.deployments.configure("acme", name="primary", provider="openai", model="m2", model_name="gpt-test",
                                       base_url=gw.upstreams.base(upstream), price=PRICE)
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    sent = gw.script(upstream).requests[-1]
    assert sent["body"]["model"] == "m2" and sent["headers"]["authorization"] == f"Bearer {SECRET}"
    gw.container.deployments.remove("acme", "primary")
    assert [m.id for m in gw.client().models.list().data] == []
    with pytest.raises(UnknownDeployment):
        gw.container.deployments.remove("acme", "primary")


def test_bad_deployments_are_refused(gw):
    with pytest.raises(UnknownTenant):
        gw.container.deployments.configure("ghost", name="x", provider="openai", model="m", price=PRICE)
    with pytest.raises(InvalidDeployment, match="provider"):
        gw.container.deployments.configure("acme", name="x", provider="watson", model="m", price=PRICE)
    with pytest.raises(InvalidDeployment, match="base_url"):
        gw.container.deployments.configure("acme", name="x", provider="openai_compatible", model="m", price=PRICE)
    assert gw.payloads("DeploymentConfigured") == []


def test_prompts_and_completions_are_sealed_per_subject_and_open_again(gw):
    gw.deploy("primary")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO, user="customer-42")
    [requested] = gw.payloads("InferenceRequested")
    [completed] = gw.payloads("InferenceCompleted")
    assert requested["subject_id"] == "customer-42"
    assert b"Say hello" not in b"".join(e.payload for e in gw.events())
    content = gw.container.privacy.open("acme", completed["content"])
    assert content["prompt"] == HELLO and content["completion"][0]["content"] == REPLY


def test_with_content_storage_off_content_is_redacted(gw):
    gw.deploy("primary")
    gw.container.privacy.set_content_storage("acme", False, actor="test")
    gw.client().chat.completions.create(model="gpt-test", messages=HELLO)
    [requested] = gw.payloads("InferenceRequested")
    [completed] = gw.payloads("InferenceCompleted")
    assert completed["content"] == {"redacted": True} and "content" not in requested
    assert requested["subject_id"] == gw.token.split("_")[1]  # no `user`: the API key id


def test_the_cli_adds_lists_and_removes_deployments(gw, monkeypatch):
    from api.cli import app

    settings = gw.container.settings
    monkeypatch.setenv("NEXUS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UPSTREAM_KEY", SECRET)
    runner = CliRunner()
    added = runner.invoke(app, ["deployments", "add", "mistral-eu", "--tenant", "acme", "--provider", "mistral",
                                "--model", "mistral-small-latest", "--model-name", "mistral-small", "--region", "eu",
                                "--input-price", "0.20", "--output-price", "0.60", "--price-version", "2026-11",
                                "--api-key-env", "UPSTREAM_KEY"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["deployments", "list", "--tenant", "acme"])
    assert "mistral-small" in listed.output and "in 200000 out 600000 USD" in listed.output
    assert "credentials: sealed (api_key)" in listed.output and SECRET not in listed.output
    assert "https://api.mistral.ai/v1" in listed.output
    bad = runner.invoke(app, ["deployments", "add", "x", "--tenant", "acme", "--provider", "openai", "--model", "m",
                              "--input-price", "0.0000001", "--output-price", "1", "--price-version", "v"])
    assert bad.exit_code == 1 and "at most 6 fractional digits" in bad.output
    removed = runner.invoke(app, ["deployments", "remove", "mistral-eu", "--tenant", "acme"])
    assert removed.exit_code == 0, removed.output
    assert runner.invoke(app, ["deployments", "list", "--tenant", "acme"]).output.startswith("tenant acme has no")
    assert orjson.loads(gw.events("DeploymentConfigured")[0].metadata)["actor"] == "cli"


def test_the_cli_shows_and_sets_a_tenants_recording_mode(gw, monkeypatch):
    from api.cli import app

    monkeypatch.setenv("NEXUS_DATABASE_URL", gw.container.settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    runner = CliRunner()
    assert runner.invoke(app, ["deployments", "recording", "--tenant", "acme"]).output == "recording for tenant acme: deferred\n"
    changed = runner.invoke(app, ["deployments", "recording", "strict", "--tenant", "acme", "--actor", "dpo@acme"])
    assert changed.exit_code == 0 and changed.output.startswith("recording for tenant acme: strict (ledger position")
    assert runner.invoke(app, ["deployments", "recording", "--tenant", "acme"]).output.endswith(": strict\n")
    bad = runner.invoke(app, ["deployments", "recording", "always", "--tenant", "acme"])
    assert bad.exit_code == 1 and "expected one of ['deferred', 'strict'], got 'always'" in bad.output
    unknown = runner.invoke(app, ["deployments", "recording", "--tenant", "nobody"])
    assert unknown.exit_code == 1 and "nobody" in unknown.output and "Traceback" not in unknown.output
    [event] = gw.events("RecordingPolicyChanged")
    assert orjson.loads(event.metadata) == {"actor": "dpo@acme"}


def test_erasing_the_subject_makes_the_content_unreadable_while_the_receipt_still_verifies(gw):
    from domain.sealing import SubjectErased
    from tests.integration.test_gateway_receipts import verify_offline

    gw.deploy("primary")
    raw = gw.client().chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO, user="customer-7")
    event_id = raw.headers["nexus-receipt"].split("event_id=")[1].split(";")[0]
    [completed] = gw.payloads("InferenceCompleted")
    gw.container.privacy.erase("acme", "customer-7", actor="test")
    with pytest.raises(SubjectErased):
        gw.container.privacy.open("acme", completed["content"])
    with gw.http() as http:
        verify_offline(http.get(f"/v1/receipts/{event_id}").json())


def test_a_failed_inference_keeps_its_prompt_sealed(gw):
    from tests.fakes.upstream import status

    upstream = gw.deploy("primary", max_retries=0)
    gw.script(upstream).then(status(500))
    with gw.http() as http:
        assert http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO}).status_code == 502
    [failed] = gw.payloads("InferenceFailed")
    assert gw.container.privacy.open("acme", failed["content"]) == {"prompt": HELLO}
