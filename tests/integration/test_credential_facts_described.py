"""Credentials sealed before they had facts (before the sixteenth session) are described afterwards: each such
deployment configured again, unchanged but for what may be shown about its credential, never the secret."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import orjson

from domain.deployments import deployments_stream
from domain.ledger import NewEvent
from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures
from tests.fakes.upstream import BEDROCK_KEY_ID, BEDROCK_SECRET, REPLY

HELLO = [{"role": "user", "content": "hello"}]
KEY_PAIR = f"{BEDROCK_KEY_ID}:{BEDROCK_SECRET}"


def configured_before_facts(gw, name: str) -> None:  # type: ignore[no-untyped-def]
    """Record `name`'s configuration again as DeploymentConfigured was written before credentials had facts."""
    stream = deployments_stream(gw.tenant)
    [*_, event] = [e for e in gw.events("DeploymentConfigured") if orjson.loads(e.payload)["name"] == name]
    payload = orjson.loads(event.payload)
    del payload["credential_facts"]
    version = len([e for e in gw.events() if e.stream_id == stream])
    gw.container.ledger.append([NewEvent(stream, "DeploymentConfigured", payload, tenant_id=gw.tenant)],
                               {stream: version})
    gw.container.deployments.invalidate(gw.tenant)


def listed(gw, name: str) -> dict:  # type: ignore[no-untyped-def]
    [found] = [d for d in gw.container.deployments.list(gw.tenant) if d["name"] == name]
    return found


def test_an_old_credential_is_described_by_its_kind_and_identifiers_and_still_serves(gw):
    gw.deploy("claude", provider="bedrock", model_name="claude", model="anthropic.claude-3-5-haiku-20241022-v1:0",
              api_key=KEY_PAIR)
    gw.deploy("gpt", model_name="gpt")
    gw.deploy("local", model_name="local", api_key=None)  # no credential: nothing to describe
    configured_before_facts(gw, "claude")
    configured_before_facts(gw, "gpt")
    assert (listed(gw, "claude")["credential_facts"], listed(gw, "claude")["has_credentials"]) == (None, True)
    before = gw.size()

    assert gw.container.deployments.describe_credentials(gw.tenant, actor="ops") == ["claude", "gpt"]

    assert listed(gw, "claude")["credential_facts"] == {"kind": "aws_key_pair", "access_key_id": BEDROCK_KEY_ID,
                                                        "session": False}
    assert listed(gw, "gpt")["credential_facts"] == {"kind": "api_key"}
    described = gw.events("DeploymentConfigured")[-2:]
    assert [e.position for e in described] == [before + 1, before + 2]  # one append
    assert {orjson.loads(e.metadata)["reason"] for e in described} == {"credential facts described"}
    assert not any(BEDROCK_SECRET in e.payload.decode() for e in described)
    assert gw.client().chat.completions.create(model="claude", messages=HELLO).choices[0].message.content == REPLY

    assert gw.container.deployments.describe_credentials(gw.tenant) == []  # nothing left: nothing recorded
    assert gw.size() == before + 2 + 2  # the chat's request and outcome


def test_the_cli_describes_old_credentials_and_says_when_there_are_none(gw, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from api.cli import app

    gw.deploy("claude", provider="bedrock", model_name="claude", model="anthropic.claude-3-5-haiku-20241022-v1:0",
              api_key=KEY_PAIR)
    configured_before_facts(gw, "claude")
    monkeypatch.setenv("NEXUS_DATABASE_URL", gw.container.settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    runner = CliRunner()
    before = gw.size()
    monkeypatch.setenv("NEXUS_DATA_DIR", str(tmp_path / "another-data-dir"))  # another master key
    refused = runner.invoke(app, ["deployments", "describe-credentials", "--tenant", gw.tenant])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "error: sealed under master key" in refused.output and gw.size() == before  # nothing recorded
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    first = runner.invoke(app, ["deployments", "describe-credentials", "--tenant", gw.tenant])
    assert first.exit_code == 0, first.output
    assert first.output == f"claude: sealed (aws_key_pair {BEDROCK_KEY_ID})\n"
    again = runner.invoke(app, ["deployments", "describe-credentials", "--tenant", gw.tenant])
    assert again.output == f"every credential of tenant {gw.tenant} is described already\n"
    unknown = runner.invoke(app, ["deployments", "describe-credentials", "--tenant", "nobody"])
    assert unknown.exit_code != 0 and "Traceback" not in unknown.output
