"""Measure an OpenAI-compatible local model server: load time, first-token latency, tokens/s, memory.

Starts the server command given after `--`, waits until GET /v1/models answers, then sends the same
streamed chat completions one after another and prints one JSON object. Both candidates of
docs/local-model.md were measured with it, each from its own throwaway venv:

    python ops/bench/local_model.py --runs 5 -- /tmp/venv-a/bin/python -m llama_cpp.server \
        --model FILE --model_alias smollm2 --host 127.0.0.1 --port {port}
    PYTHONPATH=. python ops/bench/local_model.py --runs 5 -- /tmp/venv-b/bin/python \
        ops/bench/local_model.py serve-transformers --model FILE --port {port}

`serve-transformers` is option B of the note: the same HTTP server as adapters/local_model.py (so both
are measured through identical code) with a transformers engine instead of llama.cpp. It needs torch,
transformers, gguf and accelerate, which the project does not install.

`{port}` is replaced by a free loopback port. Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPT = "Explain in three sentences why the sky is blue."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid: int) -> dict[str, int]:
    """Resident set now and its peak (VmHWM), for the server process and its children."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/models", timeout=1.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server not ready after {timeout} s")


def one_stream(base: str, model: str, max_tokens: int) -> dict[str, float]:
    """One streamed completion: time to the first content token, decode rate after it, usage."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.monotonic()
    first = last = None
    chunks = 0
    usage: dict[str, int] | None = None
    with httpx.stream("POST", f"{base}/chat/completions", json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.monotonic()
                    first = first or now
                    last = now
                    chunks += 1
    done = time.monotonic()
    if first is None or last is None:
        raise RuntimeError("no content streamed")
    tokens = usage["completion_tokens"] if usage else chunks
    return {
        "ttft_s": first - sent,
        "total_s": done - sent,
        "completion_tokens": tokens,
        "prompt_tokens": usage["prompt_tokens"] if usage else -1,
        "usage_in_stream": usage is not None,
        # tokens after the first, over the time after the first: the steady decode rate
        "decode_tokens_per_s": (tokens - 1) / (last - first) if last > first else float("nan"),
        "end_to_end_tokens_per_s": tokens / (done - sent),
    }


class TransformersEngine:
    """Option B: the same GGUF, dequantised by transformers into a float32 torch model.

    A plain token loop with a KV cache, like LlamaCppEngine's, so exact counts and early stop work the
    same way and the comparison measures the engines, not two different servers.
    """

    def __init__(self, model_path: Path, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.torch = torch
        folder, name = str(model_path.parent), model_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
        self.end_ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}

    def generate(self, messages, sampling, out):  # type: ignore[no-untyped-def]
        torch = self.torch
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        step_input = encoded["input_ids"]
        out.prompt_tokens = int(step_input.shape[1])
        limit = sampling.max_tokens or 2048 - out.prompt_tokens
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        generated: list[int] = []
        emitted = ""
        past = None
        out.finish_reason = "length"
        with torch.inference_mode():
            while out.completion_tokens < limit:
                result = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
                past = result.past_key_values
                logits = result.logits[0, -1, :]
                if sampling.temperature > 0:
                    probs = torch.softmax(logits / sampling.temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(torch.argmax(logits))
                if token in self.end_ids:
                    out.finish_reason = "stop"
                    break
                out.completion_tokens += 1
                generated.append(token)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if not text.endswith("\ufffd") and len(text) > len(emitted):  # wait for whole characters
                    yield text[len(emitted) :]
                    emitted = text
                step_input = torch.tensor([[token]])


def serve_transformers(argv: list[str]) -> None:
    from adapters.local_model import MODEL_ALIAS, create_server_app, model_file

    parser = argparse.ArgumentParser(prog="local_model.py serve-transformers")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()
    engine = TransformersEngine(args.model or model_file(), args.threads)
    print(f"loaded in {time.monotonic() - started:.2f} s", flush=True)
    import uvicorn

    uvicorn.run(create_server_app(engine, MODEL_ALIAS), host=args.host, port=args.port, log_level="warning")


def main() -> None:
    if sys.argv[1:2] == ["serve-transformers"]:
        serve_transformers(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="smollm2", help="model name sent in requests")
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- server command with {port}")
    args = parser.parse_args()
    command = [part for part in args.command if part != "--"]
    if not command:
        parser.error("give the server command after --")
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    base = f"http://127.0.0.1:{port}/v1"
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(command, stdout=devnull, stderr=devnull, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        load_s = wait_ready(base, process, args.ready_timeout)
        first_request = one_stream(base, args.model, args.max_tokens)  # includes any lazy warm-up
        runs = [one_stream(base, args.model, args.max_tokens) for _ in range(args.runs)]
        memory = memory_kib(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()

    def median(key: str) -> float:
        return round(statistics.median(run[key] for run in runs), 3)

    print(
        json.dumps(
            {
                "command": " ".join(command),
                "load_to_ready_s": round(load_s, 2),
                "first_request": {k: round(v, 3) if isinstance(v, float) else v for k, v in first_request.items()},
                "runs": args.runs,
                "median_ttft_s": median("ttft_s"),
                "median_decode_tokens_per_s": median("decode_tokens_per_s"),
                "median_end_to_end_tokens_per_s": median("end_to_end_tokens_per_s"),
                "median_completion_tokens": median("completion_tokens"),
                "prompt_tokens": runs[0]["prompt_tokens"],
                "usage_in_stream": all(run["usage_in_stream"] for run in runs),
                "rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
                "peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
                "loadavg_1m": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
