"""Whatever the batching and redelivery, a read model ends up as if every event came in one batch."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.signer import SIGNING_KEYS_STREAM
from domain.ledger import NewEvent, RecordedEvent
from projections.audit_index import AuditIndex
from projections.costs import Costs
from projections.usage import Usage
from tests.integration import test_projections_support as support
from tests.integration.test_projections_support import completed, failed, recorded, rows_of

store = support.store  # fixture

PROJECTIONS = (Usage(), Costs(), AuditIndex())
START = dt.datetime(2026, 2, 27, 23, 30, tzinfo=dt.UTC)

tenants = st.sampled_from(["acme", "globex"])
models = st.sampled_from(["gpt-4o", "claude", 'we\\ird\t"model",{x}\n'])  # COPY must escape these
events = st.one_of(
    st.builds(
        lambda tenant, model, tokens, latency, cost: completed(
            tenant=tenant, model=model, tokens_in=tokens, tokens_out=tokens // 3, latency_us=latency, cost_micros=cost
        ),
        tenants, models, st.integers(0, 10_000), st.integers(0, 10**9), st.integers(0, 10**7),
    ),
    st.builds(lambda tenant, model: failed(tenant=tenant, model=model), tenants, models),
    st.builds(
        lambda key: NewEvent(SIGNING_KEYS_STREAM, "SigningKeyRotated",
                             {"key_id": key, "algorithm": "ed25519", "public_key": "ef" * 32, "previous_key_id": None}),
        st.uuids().map(str),
    ),
    st.builds(lambda tenant: NewEvent("user-1", "UserInvited", {}, tenant_id=tenant), tenants),
)


@st.composite
def histories(draw) -> tuple[list[RecordedEvent], list[list[RecordedEvent]]]:
    """Events spread over minutes, hours and days, and the batches a consumer might deliver them in:
    random cut points, each batch possibly starting a few events early (redelivery)."""
    new = draw(st.lists(events, min_size=1, max_size=40))
    gaps = draw(st.lists(st.sampled_from([0, 0, 1, 59, 61, 3_599, 3_601, 86_399, 90_000]), min_size=len(new),
                         max_size=len(new)))
    times, moment = [], START
    for gap in gaps:
        moment += dt.timedelta(seconds=gap, microseconds=draw(st.integers(0, 999_999)) if gap else 0)
        times.append(moment)
    history = recorded(new, times)
    cuts = sorted(draw(st.sets(st.integers(1, len(history) - 1), max_size=8))) if len(history) > 1 else []
    batches, previous = [], 0
    for end in [*cuts, len(history)]:
        start = max(0, previous - draw(st.integers(0, 3)))
        batches.append(history[start:end])
        previous = end
    return history, batches


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_any_batching_with_redeliveries_gives_the_read_model_of_one_batch(store, history):
    everything, batches = history
    for projection in PROJECTIONS:
        with store.scratch(projection) as one, store.scratch(projection) as many:
            one.apply(everything)
            for batch in batches:
                many.apply(batch)
            assert rows_of(store, projection, many.schema) == rows_of(store, projection, one.schema)
