"""The embedded default model answers real prompts end to end, through the official openai SDK.

One server for the module (starting it is the expensive part); every test talks to it over loopback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from adapters.local_model import MODEL_ALIAS, LocalModel, StopScanner, model_file
from api.app import create_app
from api.bootstrap import bootstrap
from api.cli import _first_run_admin_key, _local_model_deployment
from api.settings import Settings
from tests.fakes.server import ServerThread

READY_TIMEOUT_S = 180  # llama.cpp loads the 98 MB file in about a second; the margin is for a loaded CI box
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    model = LocalModel.start(tmp_path_factory.mktemp("local-model"))
    try:
        model.wait_ready(timeout=READY_TIMEOUT_S)
        yield model
    finally:
        model.stop()


@pytest.fixture(scope="module")
def client(local_model: LocalModel) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_model.base_url, api_key="local-model-needs-no-key", max_retries=0, timeout=120)


@pytest.mark.slow
def test_a_chat_completion_answers_with_text_and_usage(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0)

    text = response.choices[0].message.content or ""
    assert text.strip(), "the model answered nothing"
    assert "paris" in text.lower()
    assert response.model == MODEL_ALIAS
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 24
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


@pytest.mark.slow
def test_a_streamed_completion_ends_with_usage_and_matches_the_unstreamed_one(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=QUESTION,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    pieces = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
    text = "".join(pieces)
    assert text.strip()
    assert sum(1 for piece in pieces if piece) > 1, "the answer arrived in one piece: not streamed"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    # greedy decoding is deterministic: the stream must say, and count, exactly what the JSON answer does
    whole = client.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0)
    assert text == whole.choices[0].message.content
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]


@pytest.mark.slow
def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    response = client.chat.completions.create(model=MODEL_ALIAS, messages=messages, max_tokens=5, temperature=0)

    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 5


@pytest.mark.slow
def test_a_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0)
    text = free.choices[0].message.content or ""
    stop = text.strip()[1:3]  # a string the greedy answer is known to contain
    cut = client.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0, stop=[stop])

    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.find(stop)]


@pytest.mark.slow
def test_models_lists_the_alias(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL_ALIAS]


@pytest.mark.slow
def test_bad_requests_get_openai_errors(client: openai.OpenAI, local_model: LocalModel) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_ALIAS, messages=[])
    response = httpx.post(f"{local_model.base_url}/chat/completions", content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_the_context_is_a_400_streamed_or_not(client: openai.OpenAI, stream: bool) -> None:
    too_long = [{"role": "user", "content": "lighthouse " * 3000}]  # the server's context holds 2048 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_ALIAS, messages=too_long, max_tokens=5, stream=stream)
    assert caught.value.code == "context_length_exceeded"


@pytest.mark.slow
def test_a_seed_repeats_a_sampled_answer_and_does_not_stick(client: openai.OpenAI) -> None:
    def sample(seed: int | None) -> str:
        messages = [{"role": "user", "content": "Invent a name for a cat."}]
        response = client.chat.completions.create(
            model=MODEL_ALIAS, messages=messages, max_tokens=12, temperature=1.5, seed=seed
        )
        return response.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(None) for _ in range(4)}) > 1, "unseeded requests after a seeded one all said the same"


@pytest.mark.slow
def test_a_stream_cut_by_the_client_frees_the_model_for_the_next_request(
    client: openai.OpenAI, local_model: LocalModel
) -> None:
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": "Count from one to one thousand in words."}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{local_model.base_url}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # generation holds the model; if the cut did not stop it, this request would wait for ~1500 tokens
    started = time.monotonic()
    response = client.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=8, temperature=0)
    assert response.choices[0].message.content
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_start_returns_at_once_and_stop_ends_the_server(tmp_path: Path) -> None:
    started = time.monotonic()
    model = LocalModel.start(tmp_path)
    try:
        assert time.monotonic() - started < 2.0, "start() must not wait for the model to load"
        assert model.process.poll() is None
        model.wait_ready(timeout=READY_TIMEOUT_S)
        assert model.ready()
    finally:
        model.stop()
    assert model.process.poll() is not None
    assert not model.ready()
    assert "starting" in (tmp_path / "local-model.log").read_text()


@pytest.mark.slow
def test_a_fresh_install_chats_with_the_local_model_through_the_gateway_and_records_it(
    database, tmp_path: Path, local_model: LocalModel  # type: ignore[no-untyped-def]
) -> None:
    """What `nexus up` does on a first start, then the SDK through NexusAI with no provider key anywhere."""
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=tmp_path / "data"))
    try:
        assert not container.identity.tenant_exists("default")
        _first_run_admin_key(container)
        _local_model_deployment(container, local_model.base_url, first_start=True)
        key, _ = container.identity.issue_key("default", ["inference", "read"], "test")
        with ServerThread(create_app(container), lifespan="on") as server:
            nexus = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key.token, max_retries=0, timeout=120)
            assert MODEL_ALIAS in [model.id for model in nexus.models.list()]
            answer = nexus.chat.completions.create(model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0)
            chunks = list(nexus.chat.completions.create(
                model=MODEL_ALIAS, messages=QUESTION, max_tokens=24, temperature=0, stream=True,
                stream_options={"include_usage": True},
            ))
        assert "paris" in (answer.choices[0].message.content or "").lower()
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert streamed == answer.choices[0].message.content
        recorded = [orjson.loads(e.payload) for e in container.ledger.read(1, 10_000) if e.type == "InferenceCompleted"]
        assert len(recorded) == 2
        for payload in recorded:
            assert (payload["deployment"], payload["provider"], payload["region"]) == (MODEL_ALIAS, "openai_compatible", "local")
            assert (payload["tokens_in"], payload["tokens_out"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
            assert payload["usage_source"] == "provider"  # exact counts from the model, streamed or not
            assert payload["cost_micros"] == 0
    finally:
        container.close()


@pytest.mark.slow
def test_the_deployment_follows_the_port_but_stays_removed_once_removed(database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    container = bootstrap(Settings(database_url=database.admin_url, data_dir=tmp_path / "data"))
    try:
        container.identity.create_tenant("default")

        def base_url() -> str | None:
            found = [d for d in container.deployments.list("default") if d["name"] == MODEL_ALIAS]
            return found[0]["base_url"] if found else None

        _local_model_deployment(container, "http://127.0.0.1:5001/v1", first_start=False)
        assert base_url() is None, "only a first start adds the deployment"
        _local_model_deployment(container, "http://127.0.0.1:5001/v1", first_start=True)
        size = container.ledger.head().size
        _local_model_deployment(container, "http://127.0.0.1:5001/v1", first_start=False)
        assert container.ledger.head().size == size, "an unchanged port records nothing"
        _local_model_deployment(container, "http://127.0.0.1:5002/v1", first_start=False)
        assert base_url() == "http://127.0.0.1:5002/v1"
        container.deployments.remove("default", MODEL_ALIAS)
        _local_model_deployment(container, "http://127.0.0.1:5003/v1", first_start=False)
        assert base_url() is None
    finally:
        container.close()


def test_the_port_is_kept_across_restarts_while_it_is_free(tmp_path: Path) -> None:
    from adapters.local_model import _stable_port

    first = _stable_port(tmp_path, "127.0.0.1")
    assert _stable_port(tmp_path, "127.0.0.1") == first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        assert _stable_port(tmp_path, "127.0.0.1") != first


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
def test_the_server_exits_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from adapters.local_model import LocalModel; "
        "model = LocalModel.start(Path(sys.argv[1])); print(model.process.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert _running(server_pid)
    parent.kill()  # as `kill -9` of `nexus up`: no finally block runs, nothing stops the server for us
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(server_pid), "the local model outlived the process that started it"


def test_the_weights_come_from_the_installed_wheel() -> None:
    path = model_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("off", False)])
def test_the_setting_reads_on_and_off(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("NEXUS_LOCAL_MODEL", value)
    assert Settings().local_model is expected


def test_stop_strings_are_found_across_pieces_and_held_back_only_while_they_could_match() -> None:
    scanner = StopScanner(["END"])
    assert scanner.feed("hello E") == "hello "  # "E" could start "END": held back
    assert scanner.feed("x") == "Ex"  # now it cannot
    assert scanner.feed("yE") == "y"
    assert scanner.feed("ND and more") == ""
    assert scanner.stopped
    assert StopScanner([]).feed("anything") == "anything"
