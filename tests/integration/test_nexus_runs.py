"""NEXUS runs: plan, route, consensus, synthesis; every step an inference in the ledger, linked by causation."""
# ruff: noqa: F811  (pytest fixtures imported from tests/fakes/harness.py are parameters here)

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson
import pytest

from application.routing_table import RoutingTableService
from tests.fakes.harness import PRICE, gw, unique, upstreams  # noqa: F401 - fixtures
from tests.fakes.scripted import Responder, Scripted, scripted_app
from tests.fakes.server import ServerThread

PLANNER = "planner of NEXUS"  # in the planner's system prompt
SYNTHESIS = "Subtask results"  # in the synthesis prompt


@pytest.fixture(scope="session")
def scripted() -> Iterator[Scripted]:
    fakes = Scripted()
    with ServerThread(scripted_app(fakes)) as server:
        fakes.url = server.url
        yield fakes


def deploy(gw, scripted: Scripted, model_name: str, tenant: str = "acme") -> Responder:
    """A deployment of `model_name` on its own scripted upstream; returns that upstream's responder."""
    upstream = unique(model_name)
    gw.container.deployments.configure(
        tenant, name=model_name, provider="openai", model=f"up-{model_name}", model_name=model_name,
        base_url=scripted.base(upstream), price=PRICE, api_key="sk-upstream")
    return scripted.responder(upstream)


def plan(*subtasks: dict) -> str:
    return json.dumps({"subtasks": list(subtasks)})


def run(gw, task: str, **body):
    with gw.http() as http:
        return http.post("/v1/nexus/runs", json={"task": task, **body})


def by_type(events, event_type):
    return [e for e in events if e.type == event_type]


def meta(event):
    return orjson.loads(event.metadata)


def payload(event):
    return orjson.loads(event.payload)


def test_a_run_is_a_graph_of_inferences_linked_by_causation(gw, scripted):
    lead = deploy(gw, scripted, "lead")  # the first deployment: planner and synthesiser by default
    math, alt = deploy(gw, scripted, "math"), deploy(gw, scripted, "alt")
    RoutingTableService(gw.container.ledger).set("acme", "math", "math")
    lead.when(PLANNER, "```json\n" + plan(
        {"id": "a", "kind": "math", "prompt": "Compute 6*7", "k": 3},
        {"id": "b", "kind": "writing", "prompt": "Describe the number", "depends_on": ["a"]},
        {"id": "c", "kind": "general", "prompt": "Name a colour"}) + "\n```")
    lead.when(SYNTHESIS, "The answer is 42 and the colour is blue.")
    lead.when("Compute 6*7", "41").when("Describe the number", "Forty-two answers everything.")
    lead.when("Name a colour", "Blue")
    math.when("Compute 6*7", "42")
    alt.when("Compute 6*7", "42.0")

    response = run(gw, "What is six times seven, and a colour?")

    assert response.status_code == 200, response.text
    body = response.json()
    run_id = body["id"]
    assert body["answer"] == "The answer is 42 and the colour is blue."
    assert [(s["id"], s["kind"], s["k"]) for s in body["plan"]["subtasks"]] == [("a", "math", 3), ("b", "writing", 1),
                                                                                ("c", "general", 1)]
    a = next(s for s in body["subtasks"] if s["id"] == "a")
    assert (a["answer"], a["model"]) == ("42", "math")  # routed by the table, agreed by exact match (42 == 42.0)
    assert (a["consensus"]["mode"], a["consensus"]["cluster_sizes"], a["consensus"]["score"]) == ("exact", [2, 1], 0.6667)
    assert [s["step"] for s in body["steps"]].count("vote") == 5 and len(body["steps"]) == 7
    # b waited for a and was given its result
    [b_prompt] = [r for r in lead.requests if "Subtask: Describe the number" in r["messages"][-1]["content"]]
    assert "[a] 42" in b_prompt["messages"][-1]["content"]

    events = [e for e in gw.events() if meta(e).get("correlation_id") == run_id]
    ids = {e.event_id: e for e in events}
    cause = {e.event_id: meta(e)["causation_id"] for e in events}
    [requested] = by_type(events, "OrchestrationRequested")
    [planned] = by_type(events, "OrchestrationPlanned")
    routed = {payload(e)["subtask_id"]: e for e in by_type(events, "SubtaskRouted")}
    completed = {payload(e)["subtask_id"]: e for e in by_type(events, "SubtaskCompleted")}
    [consensus] = by_type(events, "ConsensusReached")
    [synthesised] = by_type(events, "AnswerSynthesised")
    [done] = by_type(events, "OrchestrationCompleted")
    inferences = by_type(events, "InferenceCompleted")
    assert len(inferences) == len(by_type(events, "InferenceRequested")) == 7

    def inference_caused_by(event) -> list:
        return [e for e in inferences if cause[e.event_id] and ids[_uuid(cause[e.event_id])].type == "InferenceRequested"
                and cause[_uuid(cause[e.event_id])] == str(event.event_id)]

    [plan_call] = inference_caused_by(requested)
    assert cause[planned.event_id] == str(plan_call.event_id)
    assert all(cause[r.event_id] == str(planned.event_id) for r in routed.values())
    votes = inference_caused_by(routed["a"])
    assert sorted(payload(v)["deployment"] for v in votes) == ["alt", "lead", "math"]
    assert cause[consensus.event_id] == str(routed["a"].event_id)
    assert sorted(v["event_id"] for v in payload(consensus)["votes"]) == sorted(str(v.event_id) for v in votes)
    assert cause[completed["a"].event_id] == str(consensus.event_id)
    assert payload(routed["b"])["inputs"] == [str(completed["a"].event_id)]
    [synthesis_call] = [e for e in inferences if _caused_by_any(e, cause, ids, completed.values())]
    assert cause[synthesised.event_id] == str(synthesis_call.event_id)
    assert cause[done.event_id] == str(synthesised.event_id)
    # every run event sits on run-<id>, in order; costs add up to the recorded inferences
    assert [e.stream_id for e in events if e.type in ("OrchestrationRequested", "OrchestrationCompleted")] == [
        f"run-{run_id}"] * 2
    total = sum(payload(e)["cost_micros"] for e in inferences)
    assert body["cost_micros"] == {"USD": total} == payload(done)["cost_micros"] and total > 0
    assert response.headers["nexus-receipt"].startswith(f"position={done.position};")
    assert "content" in payload(synthesised) and "answer" not in payload(synthesised)  # sealed, never plaintext

    with gw.http() as http:
        graph = http.get(f"/v1/nexus/runs/{run_id}").json()
    assert graph["status"] == "completed" and graph["inferences"] == 7
    assert {n["event_id"] for n in graph["nodes"]} == {str(e.event_id) for e in events}
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert (str(consensus.event_id), str(completed["a"].event_id)) in edges
    assert all((v["event_id"], str(completed["a"].event_id)) in edges for v in payload(consensus)["votes"])
    assert graph["cost_micros"] == {"USD": total}


def _uuid(value):
    import uuid

    return uuid.UUID(value)


def _caused_by_any(inference, cause, ids, events) -> bool:
    requested = ids[_uuid(cause[inference.event_id])]
    return cause[requested.event_id] in {str(e.event_id) for e in events}


def test_an_invalid_plan_is_retried_once_then_the_task_goes_to_a_single_model(gw, scripted):
    lead = deploy(gw, scripted, "lead")
    lead.when(PLANNER, "I would rather not plan.", plan({"id": "a", "kind": "astrology", "prompt": "x"}))
    lead.when("Subtask: Tell me a joke", "A single-model joke.")

    body = run(gw, "Tell me a joke").json()

    assert body["answer"] == "A single-model joke." and body["plan"]["fallback"] is True
    assert [s["step"] for s in body["steps"]] == ["plan", "plan", "vote"]
    [planned] = gw.events("OrchestrationPlanned")
    rejected = payload(planned)["rejected"]
    assert [r["event_id"] for r in rejected] == [s["event_id"] for s in body["steps"][:2]]
    assert "a JSON object" in rejected[0]["reason"] and "astrology" in rejected[1]["reason"]
    retry = next(e for e in gw.events("InferenceRequested") if meta(e)["causation_id"] == rejected[0]["event_id"])
    assert payload(retry)["deployment"] == "lead"  # the retry was caused by the rejected plan
    # the retry told the planner what was wrong
    assert "That plan is invalid" in lead.requests[1]["messages"][-1]["content"]
    assert [payload(e)["synthesised"] for e in gw.events("AnswerSynthesised")] == [False]


def test_a_plan_that_becomes_valid_on_retry_is_used(gw, scripted):
    lead = deploy(gw, scripted, "lead")
    lead.when(PLANNER, plan({"id": "a", "kind": "general", "prompt": "p", "depends_on": ["a"]}),
              plan({"id": "a", "kind": "general", "prompt": "Say yes"}))
    lead.when(SYNTHESIS, "Yes.").when("Say yes", "yes")  # the synthesis prompt quotes the subtask: its rule first
    body = run(gw, "Agree").json()
    assert body["answer"] == "Yes." and body["plan"]["fallback"] is False
    assert "depending on itself" in payload(gw.events("OrchestrationPlanned")[0])["rejected"][0]["reason"]


def test_free_text_answers_are_clustered_by_similarity(gw, scripted):
    lead, b, c = deploy(gw, scripted, "lead"), deploy(gw, scripted, "b"), deploy(gw, scripted, "c")
    lead.when(PLANNER, plan({"id": "w", "kind": "writing", "prompt": "Why is the sky blue?", "k": 3}))
    lead.when(SYNTHESIS, "Rayleigh.")
    lead.when("Why is the sky blue", "The sky is blue because air scatters short blue wavelengths of sunlight.")
    b.when("Why is the sky blue", "The sky is blue because air molecules scatter short blue wavelengths of sunlight.")
    c.when("Why is the sky blue", "Because the ocean reflects onto it, obviously, said my uncle once.")

    body = run(gw, "Explain the sky").json()

    [w] = body["subtasks"]
    assert (w["consensus"]["mode"], w["consensus"]["cluster_sizes"], w["consensus"]["decided"]) == ("text", [2, 1], True)
    assert w["consensus"]["clusters"] == [["lead", "b"], ["c"]]
    assert "scatter" in w["answer"]


def test_disagreement_escalates_to_one_more_model_and_is_flagged_if_it_persists(gw, scripted):
    lead, b, c, d = (deploy(gw, scripted, n) for n in ("lead", "b", "c", "d"))
    lead.when(PLANNER, plan({"id": "tie", "kind": "math", "prompt": "Compute tie", "k": 2},
                            {"id": "split", "kind": "math", "prompt": "Compute split", "k": 3}))
    lead.when(SYNTHESIS, "Done.")
    lead.when("Compute tie", "7").when("Compute split", "1")
    b.when("Compute tie", "8").when("Compute split", "2")
    c.when("Compute tie", "7").when("Compute split", "3")
    d.when("Compute split", "4")

    body = run(gw, "Two sums").json()

    subtasks = {s["id"]: s for s in body["subtasks"]}
    tie, split = subtasks["tie"]["consensus"], subtasks["split"]["consensus"]
    assert (tie["decided"], tie["escalated"], tie["cluster_sizes"], subtasks["tie"]["answer"]) == (True, True, [2, 1], "7")
    assert (split["decided"], split["escalated"], split["cluster_sizes"]) == (False, True, [1, 1, 1, 1])
    assert body["flagged"] == ["split"]
    escalations = gw.events("ConsensusEscalated")
    assert sorted(payload(e)["subtask_id"] for e in escalations) == ["split", "tie"]
    assert [payload(e)["tie"] for e in escalations if payload(e)["subtask_id"] == "tie"] == [True]
    [failed] = gw.events("ConsensusFailed")
    assert payload(failed)["subtask_id"] == "split"
    split_escalation = next(e for e in escalations if payload(e)["subtask_id"] == "split")
    assert meta(failed)["causation_id"] == str(split_escalation.event_id)
    asked = next(e for e in gw.events("InferenceRequested") if meta(e)["causation_id"] == str(split_escalation.event_id))
    assert payload(asked)["deployment"] == "d"  # the one model not yet asked
    assert payload(gw.events("OrchestrationCompleted")[0])["flagged_subtasks"] == ["split"]
    assert "models disagreed" in next(r for r in lead.requests if SYNTHESIS in r["messages"][-1]["content"])[
        "messages"][-1]["content"]


def test_progress_streams_as_server_sent_events_in_order(gw, scripted):
    lead, b = deploy(gw, scripted, "lead"), deploy(gw, scripted, "b")
    lead.when(PLANNER, plan({"id": "x", "kind": "general", "prompt": "Pick x", "k": 2},
                            {"id": "y", "kind": "general", "prompt": "Pick y", "depends_on": ["x"]}))
    lead.when(SYNTHESIS, "It is yes then no.").when("Pick x", "yes").when("Pick y", "no")
    b.when("Pick x", "Yes!")

    with gw.http() as http, http.stream("POST", "/v1/nexus/runs", json={"task": "pick", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    frames = [f.split("\n", 1) for f in raw.strip().split("\n\n")]
    names = [name.removeprefix("event: ") for name, _ in frames]
    data = [json.loads(d.removeprefix("data: ")) for _, d in frames]

    assert names[0] == "plan" and names[-1] == "done"
    assert [n for n in names if n not in ("synthesis.delta",)] == [
        "plan", "subtask.started", "consensus", "subtask.completed", "subtask.started", "subtask.completed",
        "synthesis", "done"]
    assert names.index("synthesis.delta") > names.index("subtask.completed", 4)
    deltas = "".join(d["text"] for n, d in zip(names, data, strict=True) if n == "synthesis.delta")
    assert deltas == data[-1]["answer"] == "It is yes then no."
    assert data[names.index("consensus")]["cluster_sizes"] == [2]
    done = data[-1]
    [completed] = gw.events("OrchestrationCompleted")
    assert done["receipt"]["position"] == completed.position and len(done["steps"]) == 5
    synthesis = next(s for s in done["steps"] if s["step"] == "synthesis")
    [recorded] = [e for e in gw.events("InferenceCompleted") if str(e.event_id) == synthesis["event_id"]]
    assert payload(recorded)["tokens_out"] == 5  # the streamed synthesis is recorded with its usage


def test_bad_bodies_and_unknown_models_are_refused_and_record_nothing(gw, scripted):
    deploy(gw, scripted, "lead")
    before = gw.size()
    with gw.http() as http:
        assert http.post("/v1/nexus/runs", content=b"{nope").status_code == 400
        missing = http.post("/v1/nexus/runs", json={"stream": True})
        assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
        assert http.post("/v1/nexus/runs", json={"task": "x", "k": 3}).status_code == 400  # unknown field
        unknown = http.post("/v1/nexus/runs", json={"task": "x", "planner_model": "gpt-nope"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    RoutingTableService(gw.container.ledger).set("acme", "synthesis", "ghost")
    before = gw.size()
    assert run(gw, "x").status_code == 404
    assert gw.size() == before


def test_a_run_belongs_to_its_tenant(gw, scripted):
    lead = deploy(gw, scripted, "lead")
    lead.when(PLANNER, "no plan").when("Subtask: hi", "hello")
    run_id = run(gw, "hi").json()["id"]
    gw.container.identity.create_tenant("other")
    key, _ = gw.container.identity.issue_key("other", ["inference", "read"], "tests")
    with gw.http() as http:
        assert http.get(f"/v1/nexus/runs/{run_id}").status_code == 200
        foreign = http.get(f"/v1/nexus/runs/{run_id}", headers={"authorization": f"Bearer {key.token}"})
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "run_not_found"
        assert http.get("/v1/nexus/runs/not-a-run").status_code == 404


def test_a_failing_step_fails_the_run_and_is_recorded(gw, scripted):
    deploy(gw, scripted, "lead")
    gw.container.deployments.configure("acme", name="dead", provider="openai", model="m", model_name="dead",
                                       base_url="http://127.0.0.1:9/v1", price=PRICE, api_key="k", max_retries=0)
    response = run(gw, "x", planner_model="dead", timeout=2)
    assert response.status_code == 502 and response.json()["run_id"]
    [failed] = gw.events("OrchestrationFailed")
    [inference] = gw.events("InferenceFailed")
    assert payload(failed)["failed_event_id"] == str(inference.event_id)
    assert meta(inference)["correlation_id"] == response.json()["run_id"]
    with gw.http() as http:
        graph = http.get(f"/v1/nexus/runs/{response.json()['run_id']}").json()
    assert graph["status"] == "failed" and graph["inferences"] == 1


def test_the_routing_table_is_set_from_the_shell_as_events(gw, monkeypatch):
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("NEXUS_DATABASE_URL", gw.container.settings.database_url)
    monkeypatch.setenv("NEXUS_DATA_DIR", str(gw.container.settings.data_dir))
    result = CliRunner().invoke(app, ["routing", "set", "--tenant", "acme", "math", "solver"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["routing", "set", "--tenant", "acme", "poetry", "x"]).exit_code == 1
    [changed] = gw.events("RoutingTableChanged")
    assert (changed.stream_id, payload(changed)["kind"], payload(changed)["model"]) == ("routing-acme", "math", "solver")
    assert RoutingTableService(gw.container.ledger).table("acme") == {"math": "solver"}
