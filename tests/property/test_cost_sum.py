"""The money invariant: the sum of recorded costs equals the sum, over completed inferences, of tokens times
the price table, in integer arithmetic (domain/pricing.py states the rounding rule: one floor per inference).
"""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import asyncio
import uuid

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.bootstrap import bootstrap
from api.settings import Settings
from application.gateway import InferenceRequest
from domain.pricing import PER_TOKENS, Price, cost_micros
from tests.fakes.harness import upstreams  # noqa: F401 - fixture

prices = st.builds(
    Price,
    input=st.integers(0, 60_000_000),
    output=st.integers(0, 250_000_000),
    currency=st.sampled_from(["USD", "EUR"]),
    version=st.sampled_from(["2026-10", "2026-11"]),
    cached_input=st.none() | st.integers(0, 30_000_000),
)


@given(st.lists(st.tuples(prices, st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7)), max_size=30))
def test_per_inference_flooring_loses_less_than_one_micro_unit_each(inferences):
    total = 0
    exact = 0
    for price, tokens_in, tokens_out, cached in inferences:
        cached = min(cached, tokens_in)
        numerator = (tokens_in - cached) * price.input + cached * price.cached + tokens_out * price.output
        total += cost_micros(price, tokens_in, tokens_out, cached)
        exact += numerator
    assert total <= exact // PER_TOKENS < total + max(len(inferences), 1)


def test_recorded_costs_add_up_to_tokens_times_the_price_table(database, tmp_path, upstreams):
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=tmp_path / "data"))
    container.identity.create_tenant("acme")
    gateway = container.gateway
    try:
        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.lists(prices, min_size=1, max_size=3),
               st.lists(st.tuples(st.integers(0, 2), st.integers(1, 300)), min_size=1, max_size=6))
        def run(table, requests):
            names = []
            for price in table:
                name = f"d-{uuid.uuid4().hex[:8]}"
                container.deployments.configure("acme", name=name, provider="openai", model="m", model_name=name,
                                                base_url=upstreams.base(name), price=price)
                names.append(name)
            start = container.ledger.head().size

            async def send_all():
                try:
                    for which, words in requests:
                        name = names[which % len(names)]
                        rid = str(uuid.uuid4())
                        await gateway.complete(InferenceRequest(
                            tenant_id="acme", key_id="k", kind="chat", model=name,
                            body={"messages": [{"role": "user", "content": " ".join(["w"] * words)}]},
                            stream=False, include_usage=False, timeout_s=10, subject_id="k", request_id=rid,
                            correlation_id=rid, causation_id=rid))
                finally:
                    await gateway.aclose()

            asyncio.run(send_all())
            recorded = 0
            expected = 0
            table_now: dict[str, Price] = {}
            completed = 0
            for event in container.ledger.read(1, 100_000, tenant_id="acme"):
                p = orjson.loads(event.payload)
                if event.type == "DeploymentConfigured":
                    price = p["price"]
                    table_now[p["name"]] = (price["input_micros_per_m"], price["output_micros_per_m"],
                                            price["cached_input_micros_per_m"], price["currency"],
                                            price["price_table_version"])
                elif event.type == "InferenceCompleted" and event.position > start:
                    completed += 1
                    p_in, p_out, p_cached, currency, version = table_now[p["deployment"]]
                    p_cached = p_in if p_cached is None else p_cached
                    uncached = p["tokens_in"] - p["tokens_cached"]
                    expected += (uncached * p_in + p["tokens_cached"] * p_cached + p["tokens_out"] * p_out) // 1_000_000
                    recorded += p["cost_micros"]
                    assert (p["currency"], p["price_table_version"]) == (currency, version)
                    assert isinstance(p["cost_micros"], int)
            assert completed == len(requests)
            assert recorded == expected

        run()
    finally:
        container.close()
