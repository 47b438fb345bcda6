"""Gateway overhead at a fixed request rate, with the ledger on and durable. Prints JSON.

    .venv/bin/python ops/bench/gateway.py [--rates 50,200,500] [--duration 30] [--profile profile.txt]

Three processes: a minimal fake OpenAI upstream (raw asyncio, a fixed chat completion with usage),
the NexusAI API (uvicorn, one worker, embedded PostgreSQL with synchronous_commit on, content
sealing on), and this load generator pinned to CPU 1. For each rate the generator first calls the
upstream directly, then the same upstream through the gateway, open-loop: requests are sent on a
fixed schedule and latency is measured from the *intended* send time, so a stalled server cannot
hide its queueing (no coordinated omission). Overhead = gateway percentile - direct percentile.

Afterwards every gateway response's receipt is looked up: the check passes only if each 200 carried
a Nexus-Receipt whose event is an InferenceCompleted in the ledger (zero lost records).

The LiteLLM proxy reference is not run here (it needs its own virtualenv; see RECIPES).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
RESPONSE = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000, "model": "bench-upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the fast fake."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
}).encode()


# --- the fast fake upstream: HTTP/1.1 keep-alive, one fixed answer ---------------------------------


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "  # type: ignore[attr-defined]
                                 + str(len(RESPONSE)).encode() + b"\r\n\r\n" + RESPONSE)


def serve_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_gateway(data_dir: str, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.settings import Settings

    container = bootstrap(Settings(data_dir=Path(data_dir)))
    uvicorn.run(create_app(container), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the open-loop load generator -------------------------------------------------------------------


async def run_load(url: str, headers: dict[str, str], rate: float, duration_s: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    receipts: list[str] = []
    payload = json.dumps(BODY).encode()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(intended: float) -> None:
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    done = time.perf_counter()
                    if response.status != 200:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                        return
                    receipt = response.headers.get("nexus-receipt")
                    if receipt is not None:
                        receipts.append(receipt)
                    latencies.append(done - intended)
            except Exception as exc:  # counted, never fatal: the run must finish on schedule
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        # warm the connection pool and both servers
        await asyncio.gather(*(one(time.perf_counter()) for _ in range(20)))
        latencies.clear()
        receipts.clear()
        errors.clear()
        tasks = []
        start = time.perf_counter() + 0.05
        total = int(rate * duration_s)
        for i in range(total):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(intended)))
        await asyncio.gather(*tasks)
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 3) if ms else None

    return {"sent": total, "ok": len(ms), "errors": errors, "p50_ms": pct(0.50), "p90_ms": pct(0.90),
            "p99_ms": pct(0.99), "max_ms": round(ms[-1], 3) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 3) if ms else None, "receipts": receipts}


def _check_receipts(container, receipts: list[str]) -> dict:  # type: ignore[no-untyped-def]
    ids = [uuid.UUID(r.split("event_id=")[1].split(";")[0]) for r in receipts]
    found = 0
    legs: list[int] = []
    for i in range(0, len(ids), 1000):
        for e in container.ledger.find(ids[i:i + 1000]):
            if e.type == "InferenceCompleted":
                found += 1
                legs.append(json.loads(e.payload)["latency_us"])
    legs.sort()
    # latency_us runs from routing to the upstream's answer: the part of a request's time that is not
    # auth, parsing, sealing or the ledger commit.
    leg = {"routing_and_upstream_p50_ms": legs[len(legs) // 2] / 1000 if legs else None,
           "routing_and_upstream_p99_ms": legs[int(len(legs) * 0.99)] / 1000 if legs else None}
    return {"responses_with_receipt": len(ids), "inference_completed_found": found, "lost": len(ids) - found, **leg}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="50,200,500")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--profile", default="", help="py-spy the gateway during the 200/s gateway run; output file")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    from adapters.embedded import free_port, stop_embedded_postgres, wait_for_port
    from api.bootstrap import bootstrap
    from api.settings import Settings
    from domain.pricing import Price

    data_dir = Path(tempfile.mkdtemp(prefix="nexus-bench-gw-"))
    container = bootstrap(Settings(data_dir=data_dir))
    container.identity.create_tenant("bench")
    key, _ = container.identity.issue_key("bench", ["inference", "read"], "bench")
    up_port, gw_port = free_port(), free_port()
    container.deployments.configure("bench", name="fast", provider="openai_compatible", model="bench-upstream",
                                    model_name="bench", base_url=f"http://127.0.0.1:{up_port}/v1",
                                    price=Price(2_500_000, 10_000_000, "USD", "bench"), api_key="sk-bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    upstream = subprocess.Popen([sys.executable, __file__, "_upstream", str(up_port)], env=env)
    gateway = subprocess.Popen([sys.executable, __file__, "_gateway", str(data_dir), str(gw_port)], env=env)
    result: dict = {"benchmark": "gateway overhead", "duration_s": args.duration, "ledger": "PostgreSQL 18 embedded,"
                    " synchronous_commit on", "content_sealing": True, "litellm_proxy_reference": "not run",
                    "rates": []}
    try:
        os.sched_setaffinity(0, {1})  # the generator on CPU 1 (RECIPES: load generation)
        wait_for_port("127.0.0.1", up_port)
        wait_for_port("127.0.0.1", gw_port, timeout=60)
        auth = {"authorization": f"Bearer {key.token}", "content-type": "application/json"}
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        for rate in rates:
            direct = asyncio.run(run_load(direct_url, auth, rate, args.duration))
            profiler = None
            if args.profile and rate == 200:
                profiler = subprocess.Popen(["py-spy", "record", "--nonblocking", "--format", "raw", "-o", args.profile, "-r", "200",
                                             "-d", str(int(args.duration)), "-p", str(gateway.pid)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            through = asyncio.run(run_load(gateway_url, auth, rate, args.duration))
            if profiler is not None:
                profiler.wait(timeout=args.duration + 30)
            check = _check_receipts(container, through.pop("receipts"))
            direct.pop("receipts")
            overhead = {f"{p}_ms": round(through[f"{p}_ms"] - direct[f"{p}_ms"], 3)
                        for p in ("p50", "p90", "p99") if through[f"{p}_ms"] is not None and direct[f"{p}_ms"] is not None}
            result["rates"].append({"rate_per_s": rate, "direct": direct, "gateway": through, "overhead": overhead,
                                    "records": {**check, "all_recorded": check["lost"] == 0
                                                and check["responses_with_receipt"] == through["ok"] == through["sent"]}})
        at_200 = next((r for r in result["rates"] if r["rate_per_s"] == 200), None)
        if at_200 is not None:
            result["targets_at_200_per_s"] = {
                "overhead_p50_le_2ms": at_200["overhead"].get("p50_ms", 1e9) <= 2.0,
                "overhead_p99_le_10ms": at_200["overhead"].get("p99_ms", 1e9) <= 10.0,
                "zero_lost_records": at_200["records"]["all_recorded"],
            }
    finally:
        for process in (gateway, upstream):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        container.close()
        stop_embedded_postgres(data_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        serve_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_gateway":
        serve_gateway(sys.argv[2], int(sys.argv[3]))
    else:
        main()
