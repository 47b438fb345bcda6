"""Plans: what a planner may propose, how it is parsed, and who votes; the routing table's fold."""

from __future__ import annotations

import pytest

from application.orchestrator import parse_plan
from domain.orchestration import (
    MAX_K,
    MAX_SUBTASKS,
    InvalidPlan,
    choose_voters,
    escalation_model,
    fallback_plan,
    run_graph,
    validate_plan,
)
from domain.routing_table import InvalidRoutingChange, decide_change, fold, model_for


def sub(id, kind="general", prompt="do it", depends_on=(), k=1):
    return {"id": id, "kind": kind, "prompt": prompt, "depends_on": list(depends_on), "k": k}


def test_a_valid_plan_comes_back_with_dependencies_first():
    plan = validate_plan([sub("b", depends_on=["a"]), sub("a", kind="math", k=3)])
    assert [s.id for s in plan.subtasks] == ["a", "b"]
    assert plan.by_id()["a"].k == 3 and plan.by_id()["b"].depends_on == ("a",)


@pytest.mark.parametrize(("subtasks", "where"), [
    ([], "subtasks"),
    ([sub(str(i)) for i in range(MAX_SUBTASKS + 1)], "subtasks"),
    ([sub("a"), sub("a")], "subtasks[1].id"),
    ([sub("bad id!")], "subtasks[0].id"),
    ([sub("a", kind="astrology")], "subtasks[0].kind"),
    ([sub("a", prompt="  ")], "subtasks[0].prompt"),
    ([sub("a", k=0)], "subtasks[0].k"),
    ([sub("a", k=MAX_K + 1)], "subtasks[0].k"),
    ([sub("a", k=True)], "subtasks[0].k"),
    ([sub("a", depends_on=["zz"])], "a.depends_on"),
    ([sub("a", depends_on=["a"])], "a.depends_on"),
    ([sub("a", depends_on=["b"]), sub("b", depends_on=["c"]), sub("c", depends_on=["a"])], "depends_on"),
])
def test_a_plan_that_breaks_a_rule_says_where(subtasks, where):
    with pytest.raises(InvalidPlan) as raised:
        validate_plan(subtasks)
    assert raised.value.where == where


def test_a_cycle_is_named():
    with pytest.raises(InvalidPlan, match="a -> b -> a"):
        validate_plan([sub("a", depends_on=["b"]), sub("b", depends_on=["a"])])


def test_the_planners_json_is_found_inside_fences_and_prose():
    text = 'Here you go:\n```json\n{"subtasks": [{"id": "a", "kind": "code", "prompt": "write it"}]}\n```'
    [only] = parse_plan(text).subtasks
    assert (only.id, only.kind, only.k, only.depends_on) == ("a", "code", 1, ())


@pytest.mark.parametrize("text", ["no json here", '{"steps": []}', '{"subtasks": [{"id": "a"}]}', "{broken"])
def test_a_reply_without_a_valid_plan_is_invalid(text):
    with pytest.raises(InvalidPlan):
        parse_plan(text)


def test_the_fallback_is_one_general_subtask_that_is_the_task():
    plan = fallback_plan("Tell me a joke")
    assert plan.fallback and [(s.kind, s.prompt, s.k) for s in plan.subtasks] == [("general", "Tell me a joke", 1)]


def test_voters_are_the_routed_model_then_the_others_then_samples_again():
    assert choose_voters("m", ["a", "m", "b"], 3) == ["m", "a", "b"]
    assert choose_voters("m", ["m", "a"], 5) == ["m", "a", "m", "a", "m"]
    assert escalation_model("m", ["a", "m", "b"], ["m", "a"]) == "b"
    assert escalation_model("m", ["m"], ["m", "m"]) == "m"  # no one left: another sample


def test_the_routing_table_is_the_fold_of_its_changes():
    events = [("RoutingTableChanged", decide_change({}, "t", "math", "m1")),
              ("RoutingTableChanged", decide_change({"math": "m1"}, "t", "general", "g")),
              ("RoutingTableChanged", decide_change({"math": "m1", "general": "g"}, "t", "math", None))]
    table = fold(events)
    assert table == {"general": "g"}
    assert model_for(table, "math", "default") == "g"  # unset kinds fall back to general
    assert model_for(table, "planner", "default") == "default"  # roles do not
    assert decide_change(table, "t", "general", "g") is None  # already so: nothing to record
    with pytest.raises(InvalidRoutingChange):
        decide_change(table, "t", "poetry", "m")


def test_the_run_graph_links_causes_and_inputs():
    def ev(i, type, cause=None, **payload):
        return {"event_id": i, "type": type, "stream_id": "s", "position": int(i), "payload": payload,
                "metadata": {"correlation_id": "r", "causation_id": cause}}

    graph = run_graph("r", [
        ev("1", "SubtaskRouted"), ev("2", "InferenceRequested", "1"),
        ev("3", "InferenceCompleted", "2", cost_micros=5, currency="USD"),
        ev("4", "ConsensusReached", "1", votes=[{"event_id": "3"}]), ev("5", "OrchestrationCompleted", "4")])
    assert {(e["from"], e["to"], e["kind"]) for e in graph["edges"]} == {
        ("1", "2", "caused"), ("2", "3", "caused"), ("1", "4", "caused"), ("3", "4", "input"), ("4", "5", "caused")}
    assert (graph["status"], graph["cost_micros"], graph["inferences"]) == ("completed", {"USD": 5}, 1)
