"""The live console in a real browser: a NEXUS run from the chat (plan, subtasks, consensus, synthesis as they
happen, then its mesh), the dashboard's live bucket, zoom and PNG export, and the inference log's live row
and older page. Real API on the test PostgreSQL and NATS (with the ledger-to-NATS relay running, as under
`nexus up`), fake upstreams from tests/fakes. Screenshots: test-artifacts/console/live-*.png.
"""
# ruff: noqa: F811  (pytest fixtures imported from the harnesses are parameters here)

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from application.routing_table import RoutingTableService
from tests.e2e.conftest import ARTIFACTS, DESKTOP, PHONE, shot, sign_in_with_key
from tests.fakes.upstream import REPLY, slow, status
from tests.integration.test_graphql_harness import Api
from tests.integration.test_graphql_subscriptions import RelayThread
from tests.integration.test_nexus_runs import PLANNER, SYNTHESIS, deploy, scripted  # noqa: F401 - fixture
from tests.integration.test_nexus_runs import plan as plan_reply
from tests.integration.test_projections_support import completed

ANSWER = "The answer is 42 and the colour is blue."


@pytest.fixture(autouse=True)
def no_leftover_behaviours(upstreams: Any) -> Iterator[None]:
    """A test that fails early leaves its scripted upstream behaviours queued: clear them for the next test."""
    yield
    upstreams.script("console-e2e").queue.clear()


def chat(console: Api, text: str = "Say hello") -> None:
    with console.http(console.keys["acme"]) as http:
        r = http.post("/v1/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text


def open_console(new_page: Any, console: Api, errors: list[str], viewport: dict[str, int] = DESKTOP) -> Any:
    page = new_page(viewport, errors, timeout_ms=20_000)
    page.goto(console.url + "/")
    sign_in_with_key(page, console.keys["acme"])
    page.get_by_role("heading", name="Dashboard").wait_for()
    return page


def record(**seconds: float) -> None:
    """Keep measured delays in test-artifacts/console/live-timings.json (one run of this file)."""
    path = ARTIFACTS / "live-timings.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**found, **{k: round(v, 3) for k, v in seconds.items()}}, indent=2) + "\n")


def fits(page: Any, what: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{what} scrolls sideways on a phone: {width}px"


def settle(page: Any) -> None:
    """Let the mesh's entry animations (0.45 s) finish before a screenshot."""
    page.wait_for_timeout(600)


def go(page: Any, link: str, heading: str) -> None:
    nav = page.get_by_role("navigation", name="Main")
    if not nav.is_visible():  # phone width: the navigation is behind its toggle
        page.get_by_role("button", name="Toggle navigation").click()
    nav.get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading, exact=True).wait_for()


def test_a_nexus_run_from_the_chat_shows_plan_subtasks_consensus_synthesis_and_its_mesh(
        new_page, console, upstreams, scripted, console_errors):
    lead, math = deploy(console, scripted, "lead"), deploy(console, scripted, "math")
    routing = RoutingTableService(console.container.ledger)
    for kind, model in (("planner", "lead"), ("math", "math"), ("writing", "lead"), ("general", "lead")):
        routing.set("acme", kind, model)
    lead.when(PLANNER, plan_reply({"id": "a", "kind": "math", "prompt": "Compute 6*7", "k": 3},
                            {"id": "b", "kind": "writing", "prompt": "Describe the number", "depends_on": ["a"]},
                            {"id": "c", "kind": "general", "prompt": "Name a colour"}))
    lead.when(SYNTHESIS, ANSWER)
    lead.when("Compute 6*7", "42").when("Describe the number", "Forty-two answers everything.").when("Name a colour", "Blue")
    math.when("Compute 6*7", "42")
    # gpt-test (the third voter of subtask a) answers slowly: the page is seen while the run is half done.
    upstreams.script("console-e2e").then(slow(12.0))

    with RelayThread(console):  # the ledger reaches NATS, as under `nexus up`: the mesh page follows run events
        page = open_console(new_page, console, console_errors)
        go(page, "Chat", "Chat")
        page.get_by_role("radio", name="NEXUS run").click()
        page.get_by_label("Message").fill("What is six times seven, and a colour?")
        page.get_by_role("button", name="Run").click()
        started = time.perf_counter()

        # As it happens: the plan, one subtask done while the voters of another still answer, the mesh flowing.
        plan = page.get_by_test_id("nexus-plan")
        page.wait_for_function("document.querySelector('[data-testid=nexus-plan]')?.textContent === 'Plan: 3 subtasks'")
        record(nexus_click_to_plan_shown_s=time.perf_counter() - started)
        page.locator("[data-testid=nexus-subtask][data-status=done]").first.wait_for()
        page.locator("[data-testid=chat-mesh] .mesh-flow").first.wait_for()  # an edge to a call still in flight
        running = page.locator("[data-testid=nexus-subtask][data-status=running]").count()
        shot(page, "live-01-nexus-mid-run")
        assert running >= 1, "expected a subtask still running while another is done"

        # Meanwhile its mesh page follows it: the voters in flight, then the whole graph. The chat's answer
        # keeps streaming into its conversation while the page is elsewhere.
        page.get_by_test_id("msg-assistant").last.get_by_role("link", name="Open in AI Mesh").click()
        page.get_by_test_id("run-status").filter(has_text="running").wait_for()
        page.locator("[data-testid=mesh-svg] .mesh-flow").first.wait_for()  # voters routed before the page opened
        settle(page)
        shot(page, "live-02-mesh-while-running")
        page.get_by_test_id("run-status").filter(has_text="completed").wait_for(timeout=30_000)
        assert page.locator("[data-testid=mesh-svg] .mesh-flow").count() == 0
        go(page, "Chat", "Chat")

        # Then: consensus, synthesis, the answer with its cost and receipt.
        message = page.get_by_test_id("msg-assistant").last
        message.get_by_test_id("receipt").wait_for(timeout=30_000)
        record(nexus_click_to_receipt_shown_s_with_a_12s_voter=time.perf_counter() - started)
        assert plan.inner_text() == "Plan: 3 subtasks"
        subtasks = message.get_by_test_id("nexus-subtask")
        assert subtasks.count() == 3 and all(subtasks.nth(i).get_attribute("data-status") == "done" for i in range(3))
        consensus = message.get_by_test_id("nexus-consensus").inner_text()
        assert re.search(r"consensus 67% \(2/1, text\)", consensus), consensus
        assert "Synthesis by lead" in message.get_by_test_id("nexus-synthesis").inner_text()
        assert message.locator(".msg-text").inner_text().strip() == ANSWER
        assert "USD" in message.get_by_test_id("cost").inner_text()
        page.wait_for_function("!document.querySelector('[data-testid=chat-mesh] .mesh-flow')")
        shot(page, "live-03-nexus-done")
        [done] = [e for e in console.container.ledger.read(1, 10_000) if e.type == "OrchestrationCompleted"]
        assert f"#{done.position}" in message.get_by_test_id("receipt").inner_text()
        run_id = json.loads(done.payload)["run_id"]

        # Its mesh: three models as nodes, calls as edges; then every call and decision in causal order. The run
        # list reads the inference log (brought to the head here; NATS consumers do it under `nexus up`).
        console.project()
        message.get_by_role("link", name="Open in AI Mesh").click()
        page.get_by_role("heading", name="AI Mesh").wait_for()
        assert page.url.endswith(f"/mesh?run={run_id}")
        page.get_by_test_id("run-status").filter(has_text="completed").wait_for()
        models = page.get_by_test_id("mesh-model")
        assert sorted(models.nth(i).get_attribute("data-model") for i in range(models.count())) == ["gpt-test", "lead", "math"]
        assert page.get_by_test_id("mesh-edge").count() >= 5
        page.get_by_test_id("run-link").filter(has_text=run_id[:8]).wait_for()
        settle(page)
        shot(page, "live-04-mesh-models")
        page.get_by_role("radio", name="Models").focus()
        page.keyboard.press("ArrowRight")  # the view switch is a radio group: arrow keys move the choice
        assert page.get_by_role("radio", name="Calls").get_attribute("aria-checked") == "true"
        assert page.get_by_test_id("mesh-call").count() == 7  # plan, 3 votes, b, c, synthesis
        settle(page)
        shot(page, "live-05-mesh-calls")

        # Conversations are kept for this user: a new one, then the NEXUS one again after a reload.
        go(page, "Chat", "Chat")
        page.get_by_text("Conversations (1)").click()
        page.get_by_role("button", name="New conversation").click()
        assert page.get_by_test_id("msg-assistant").count() == 0
        page.reload()
        page.get_by_role("heading", name="Chat").wait_for()
        page.get_by_text("Conversations (1)").click()
        page.get_by_test_id("conversation").filter(has_text="What is six times seven").click()
        page.get_by_test_id("msg-assistant").get_by_test_id("receipt").wait_for()
        shot(page, "live-06-conversations")

        # Phone width: the mesh and the chat fit without sideways scrolling.
        phone = open_console(new_page, console, console_errors, PHONE)
        phone.goto(console.url + f"/mesh?run={run_id}")
        phone.get_by_test_id("run-status").filter(has_text="completed").wait_for()
        for path, name in ((f"/mesh?run={run_id}", "live-07-phone-mesh"), ("/chat", "live-08-phone-chat")):
            phone.goto(console.url + path)
            phone.get_by_role("heading", name="AI Mesh" if "mesh" in path else "Chat").wait_for()
            settle(phone)
            fits(phone, path)
            shot(phone, name)
        assert console_errors == [], console_errors


def test_the_dashboard_and_the_log_follow_new_inferences_live(new_page, console, console_errors):
    console.append(*[completed(tenant="acme", model="gpt-older") for _ in range(60)])  # history: more than one page
    console.project()
    with RelayThread(console):
        page = open_console(new_page, console, console_errors)

        # The dashboard's live card counts a chat message as it is recorded (metrics subscription).
        page.get_by_test_id("live-state").filter(has_text="live").wait_for()
        page.get_by_text("Waiting for inferences").wait_for()
        page.wait_for_timeout(500)  # the subscription is open before the message is sent
        sent = time.perf_counter()
        chat(console)
        # The totals come from the read models, which the NATS consumers bring up to date under `nexus up`;
        # here the test does it at once. The page reads them again a moment after the live bucket moves.
        console.project()
        live = page.get_by_label("Live totals")
        live.wait_for()
        record(chat_to_dashboard_live_s=time.perf_counter() - sent)
        assert re.search(r"Live inferences\s*1\b", live.inner_text()), live.inner_text()
        totals = page.get_by_label("Totals", exact=True)
        page.wait_for_function("/Inferences\\s*61\\b/.test(document.querySelector('[aria-label=Totals]')?.innerText)")
        record(chat_to_dashboard_totals_s=time.perf_counter() - sent)
        shot(page, "live-09-dashboard-live")

        # Zoom: drag across the inferences chart; the range becomes that window, in finer buckets.
        chart = page.get_by_role("region", name="Inferences and errors").locator(".recharts-wrapper > svg.recharts-surface")
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.8, y)
        page.wait_for_timeout(100)  # Recharts reads the pointer on animation frames
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 8, y, steps=8)
        page.wait_for_timeout(100)
        page.mouse.up()
        assert page.get_by_label("Time range").input_value() == "custom"
        page.locator("[data-granularity=MINUTE]").wait_for()  # 24 hours in hours, the last few in minutes
        page.get_by_role("button", name="Reset zoom").wait_for()
        page.wait_for_function("/Inferences\\s*61\\b/.test(document.querySelector('[aria-label=Totals]')?.innerText)")
        assert re.search(r"Inferences\s*61\b", totals.inner_text())
        shot(page, "live-10-dashboard-zoomed")

        # PNG export of a chart: a real PNG of the drawn chart.
        with page.expect_download() as download:
            page.get_by_role("button", name="Export Inferences and errors as PNG").click()
        png = Path(download.value.path()).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 3000, len(png)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "live-11-exported-chart.png").write_bytes(png)

        # The log: the newest page, a new inference arriving live, then an older page.
        go(page, "Inference log", "Inference log")
        rows = page.get_by_test_id("log-row")
        page.wait_for_function("document.querySelectorAll('[data-testid=log-row]').length === 50")
        assert "gpt-upstream" in rows.first.inner_text()  # the chat message, newest first
        page.get_by_test_id("live-state").filter(has_text="live").wait_for()
        page.wait_for_timeout(500)
        sent = time.perf_counter()
        chat(console, "Say hello again")
        page.wait_for_function("document.querySelectorAll('[data-testid=log-row]').length === 51")
        record(chat_to_log_live_row_s=time.perf_counter() - sent)
        assert "gpt-upstream" in rows.first.inner_text() and "gpt-upstream" in rows.nth(1).inner_text()
        shot(page, "live-12-log-live-row")
        console.project()
        page.get_by_role("button", name="Load more").click()
        page.wait_for_function("document.querySelectorAll('[data-testid=log-row]').length === 62")
        assert not page.get_by_role("button", name="Load more").is_visible()
        assert page.get_by_test_id("log-count").inner_text().startswith("62 shown")

        # Server-side filters, and the detail drawer with the ledger entry.
        page.get_by_label("Model").fill("gpt-upstream")
        page.wait_for_function("document.querySelectorAll('[data-testid=log-row]').length === 2")
        rows.first.get_by_role("button", name=re.compile("Details")).click()
        drawer = page.get_by_role("dialog", name="Inference details")
        drawer.get_by_text("Ledger entry").wait_for()
        assert "InferenceCompleted" in drawer.get_by_test_id("ledger-entry").inner_text()
        assert "gpt-upstream" in drawer.inner_text() and REPLY not in drawer.inner_text()  # content is sealed
        shot(page, "live-13-log-detail")

        # Phone width: the dashboard and the log fit without sideways scrolling.
        phone = open_console(new_page, console, console_errors, PHONE)
        phone.get_by_label("Totals", exact=True).wait_for()
        fits(phone, "the dashboard")
        shot(phone, "live-14-phone-dashboard")
        go(phone, "Inference log", "Inference log")
        phone.get_by_test_id("log-row").first.wait_for()
        fits(phone, "the inference log")
        shot(phone, "live-15-phone-log")
    assert console_errors == [], console_errors


def test_a_failed_run_says_why_in_the_chat_and_its_mesh_shows_the_failed_call(new_page, console, upstreams,
                                                                              console_errors):
    upstreams.script("console-e2e").then(*[status(503)] * 4)  # the planner (the default model) is down

    page = open_console(new_page, console, console_errors)
    go(page, "Chat", "Chat")
    page.get_by_role("radio", name="NEXUS run").click()
    page.get_by_label("Message").fill("Plan something")
    page.get_by_role("button", name="Run").click()
    message = page.get_by_test_id("msg-assistant").last
    message.get_by_role("alert").wait_for()
    assert message.get_by_test_id("receipt").count() == 0
    shot(page, "live-16-nexus-failed")

    message.get_by_role("link", name="Open in AI Mesh").click()
    page.get_by_test_id("run-status").filter(has_text="failed").wait_for()
    page.get_by_test_id("mesh-end").filter(has_text="Failed").wait_for()
    page.get_by_role("radio", name="Calls").click()
    assert page.locator("[data-testid=mesh-call]").count() == 1  # the planner's call, failed
    settle(page)
    shot(page, "live-17-mesh-failed")
    assert console_errors == [], console_errors
