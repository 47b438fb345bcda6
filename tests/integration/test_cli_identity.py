"""`nexus tenants` and `nexus keys` from the shell: a key is printed once, works at once, and stops at once."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.fakes.harness import gw, upstreams  # noqa: F401 - fixtures


@pytest.fixture
def nexus(gw, monkeypatch):
    monkeypatch.setenv("NEXUS_DATABASE_URL", gw.container.settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_a_tenant_and_a_key_made_from_the_shell_authenticate_until_the_key_is_revoked(gw, nexus):
    created = nexus("tenants", "create", "initech", "--name", "Initech")
    assert created.exit_code == 0 and created.output.startswith("tenant initech created (ledger position")
    issued = nexus("keys", "create", "--tenant", "initech", "--scopes", "inference,read", "--name", "ci")
    assert issued.exit_code == 0, issued.output
    header, token = issued.output.splitlines()
    key_id = header.split()[2]
    assert header.endswith("the key, shown once:") and token.startswith("nx")

    principal = gw.container.identity.authenticate(token)
    assert principal is not None and (principal.tenant_id, principal.key_id) == ("initech", key_id)
    assert sorted(principal.scopes) == ["inference", "read"]
    listed = nexus("keys", "list", "--tenant", "initech").output
    assert key_id in listed and "active" in listed and token not in listed

    assert nexus("keys", "revoke", key_id, "--tenant", "initech").exit_code == 0
    assert gw.container.identity.authenticate(token) is None
    assert "revoked" in nexus("keys", "list", "--tenant", "initech").output


def test_refusals_from_the_shell_are_one_line_on_stderr_with_exit_status_1_and_record_nothing(gw, nexus):
    before = len(gw.events())
    for args, message in [
        (("tenants", "create", "acme"), "acme"),  # exists already
        (("tenants", "create", "Not A Tenant"), "tenant"),
        (("keys", "create", "--tenant", "nobody"), "nobody"),
        (("keys", "create", "--tenant", "acme", "--scopes", "inference,everything"), "everything"),
        (("keys", "revoke", "no-such-key", "--tenant", "acme"), "no-such-key"),
    ]:
        result = nexus(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output and "Traceback" not in result.output
    assert len(gw.events()) == before
