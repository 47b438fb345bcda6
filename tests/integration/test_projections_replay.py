"""Replay-based analytics over a slice of history, and the `nexus projections` / `nexus replay` commands."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time

import pytest
from typer.testing import CliRunner

from api.cli import app
from projections import repricing
from projections.replay import load_projection, parse_instant, replay
from projections.usage import Usage
from tests.integration import test_projections_support as support
from tests.integration.test_projections_support import completed, failed, schemas_named

store = support.store  # fixture

WHAT_IF = {
    "version": "what-if-1",
    "currency": "USD",
    "models": {
        "gpt-4o": {"input_per_1m": 2_500_000, "output_per_1m": 8_000_000},
        "anthropic/claude-sonnet": {"input_per_1m": 3_000_000, "output_per_1m": 15_000_000},
    },
}


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(WHAT_IF))
    return path


def recorded_at(ledger, receipt) -> dt.datetime:
    return parse_instant(ledger.find([receipt.event_id])[0].recorded_at)


def test_repricing_a_slice_of_history_reports_old_and_new_cost_per_tenant_and_model(ledger, store, prices):
    ledger.append([completed(model="gpt-4o", tokens_in=1_000, tokens_out=500, cost_micros=9_000) for _ in range(3)])
    time.sleep(0.01)
    inside = ledger.append(
        [
            completed(tenant="acme", model="gpt-4o", tokens_in=1_000, tokens_out=500, cost_micros=9_000),
            completed(tenant="acme", model="gpt-4o", tokens_in=2_001, tokens_out=0, cost_micros=11_000),
            completed(tenant="acme", provider="mistral", model="mistral-large", tokens_in=10, tokens_out=10,
                      cost_micros=40),
            completed(tenant="globex", provider="anthropic", model="claude-sonnet", tokens_in=1_000_000,
                      tokens_out=1_000, cost_micros=3_100_000),
            failed(tenant="acme", model="gpt-4o"),
        ]
    )
    time.sleep(0.01)
    after = ledger.append([completed(model="gpt-4o", cost_micros=1) for _ in range(2)])

    result = replay(store, ledger, repricing.create(prices=str(prices)),
                    recorded_at(ledger, inside[0]), recorded_at(ledger, after[0]))

    assert (result.first_position, result.last_position, result.events) == (4, 8, 5)
    assert [
        (r["tenant_id"], r["model"], r["requests"], r["old_cost_micros"], r["new_cost_micros"], r["unpriced_requests"])
        for r in result.rows
    ] == [  # ordered by tenant, provider, model
        ("acme", "mistral-large", 1, 40, 40, 1),  # not in the new table: keeps its recorded cost
        # 1,000 x 2.5 + 500 x 8 = 6,500; 2,001 x 2.5 = 5,002.5, rounded half up to 5,003
        ("acme", "gpt-4o", 2, 20_000, 11_503, 0),
        ("globex", "claude-sonnet", 1, 3_100_000, 3_015_000, 0),  # found as "anthropic/claude-sonnet"
    ]
    assert {(r["new_currency"], r["price_table_version"]) for r in result.rows} == {("USD", "what-if-1")}
    assert result.rows[1]["delta_micros"] == 11_503 - 20_000
    assert schemas_named(store, "scratch_") == []  # the scratch schema is dropped


def test_a_slice_without_events_reports_nothing(ledger, store):
    ledger.append([completed()])
    result = replay(store, ledger, Usage(), parse_instant("2001-01-01"), parse_instant("2001-02-01"))
    assert (result.events, result.rows, result.first_position) == (0, [], None)


def test_projections_load_from_a_short_name_or_a_dotted_path_with_parameters(prices):
    assert load_projection("usage").name == "usage"
    assert load_projection("projections.costs").name == "costs"
    priced = load_projection("repricing", {"prices": str(prices)})
    assert priced.table.prices["gpt-4o"] == (2_500_000, 8_000_000)
    with pytest.raises(TypeError, match="price table"):
        load_projection("repricing")
    with pytest.raises(TypeError, match="create"):
        load_projection("projections.base")


def test_times_are_rfc3339_or_dates_at_midnight_utc():
    assert parse_instant("2026-11-01") == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert parse_instant("2026-11-01T12:30:00Z") == dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)
    assert parse_instant("2026-11-01T14:30:00+02:00") == dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="time zone"):
        parse_instant("2026-11-01T12:30:00")
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_instant("last tuesday")


def test_the_commands_replay_to_json_and_csv_catch_up_show_status_and_rebuild(
    database, ledger, prices, tmp_path, monkeypatch
):
    monkeypatch.setenv("NEXUS_DATABASE_URL", database.admin_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "250")
    ledger.append([completed(model="gpt-4o", tokens_in=1_000, tokens_out=500, cost_micros=9_000) for _ in range(4)])
    runner = CliRunner()
    slice_ = ["--projection", "repricing", "--param", f"prices={prices}", "--from", "2000-01-01", "--to", "2100-01-01"]

    exported = runner.invoke(app, ["replay", *slice_, "--out", str(tmp_path / "r.json")])
    assert exported.exit_code == 0, exported.output
    [row] = json.loads((tmp_path / "r.json").read_text())
    assert (row["requests"], row["old_cost_micros"], row["new_cost_micros"]) == (4, 36_000, 26_000)

    assert runner.invoke(app, ["replay", *slice_, "--out", str(tmp_path / "r.csv")]).exit_code == 0
    [line] = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert line["new_cost_micros"] == "26000"

    printed = runner.invoke(app, ["replay", *slice_])
    assert printed.exit_code == 0 and "gpt-4o" in printed.output and "26,000" in printed.output

    refused = runner.invoke(app, ["replay", "--projection", "repricing", "--from", "x", "--to", "2100-01-01"])
    assert refused.exit_code != 0

    assert runner.invoke(app, ["projections", "catch-up"]).exit_code == 0
    status = runner.invoke(app, ["projections", "status"])
    assert status.exit_code == 0, status.output
    assert "audit_index" in status.output and "running" in status.output

    rebuilt = runner.invoke(app, ["projections", "rebuild", "usage"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt into" in rebuilt.output and "events/s" in rebuilt.output
    assert runner.invoke(app, ["projections", "rebuild", "nope"]).exit_code != 0
