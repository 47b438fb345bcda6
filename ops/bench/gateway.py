"""Gateway overhead at a fixed request rate, with the ledger on and durable, against the LiteLLM proxy. JSON.

    .venv/bin/python ops/bench/gateway.py [--rates 50,200,500] [--duration 30] [--profile profile.txt]
                                          [--no-litellm] [--output run.json]
    .venv/bin/python ops/bench/gateway.py --median run1.json run2.json run3.json

Four processes: a minimal fake OpenAI upstream (raw asyncio, a fixed chat completion with usage),
the NexusAI API (uvicorn, one worker, embedded PostgreSQL with synchronous_commit on, content
sealing on), the LiteLLM proxy (litellm 1.110.2, one worker, no database, the same upstream as its
only model) and this load generator pinned to CPU 1. For each rate the generator calls the upstream
directly, then the same upstream through the gateway, then through the proxy, open-loop: requests are
sent on a fixed schedule and latency is measured from the *intended* send time, so a stalled server
cannot hide its queueing (no coordinated omission). Overhead = target percentile - direct percentile;
`vs_litellm` divides the proxy's overhead by ours (how many times lower ours is).

Afterwards every gateway response's receipt is looked up: the check passes only if each 200 carried
a Nexus-Receipt whose event is an InferenceCompleted in the ledger (zero lost records).

The proxy needs its own virtualenv (litellm[proxy]==1.110.2 does not resolve: its litellm-proxy
dependency is not on the index, so the extra's other dependencies are installed by hand). It is
made on first use in .nexus/bench/litellm-venv (gitignored), about 2 minutes; never litellm 1.107.0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
# Run as a script, Python puts ops/bench/ first on the path, where bench scripts named like packages
# (ops/bench/graphql.py) would shadow them: import from the repository's root only.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

LITELLM_VENV = ROOT / ".nexus" / "bench" / "litellm-venv"
# litellm 1.110.2 and its `proxy` extra's dependencies, as its wheel's metadata lists them, except
# litellm-proxy==1.110.2 (not on the index; the litellm wheel holds the proxy) and with the newest
# litellm-proxy-extras / litellm-enterprise the index has (0.4.114.post1 / 0.1.83.post1 are not on it).
LITELLM_PROXY_REQUIREMENTS = [
    "litellm==1.110.2",  # never 1.107.0 (a compromised release)
    "gunicorn>=23.0.0,<24.0", "uvicorn>=0.33.0,<1.0", "granian>=2.7.4,<3.0", "uvloop>=0.22.1,<1.0",
    "fastapi>=0.136.3,<1.0", "starlette>=1.0.1,<2.0", "backoff>=2.2.1,<3.0", "pyyaml>=6.0.3,<7.0", "rq>=2.7.0,<3.0",
    "orjson>=3.11.6,<4.0", "hiredis>=3.0.0,<4.0", "apscheduler>=3.11.2,<4.0", "fastapi-sso>=0.19.0,<1.0",
    "pyjwt>=2.13.0,<3.0", "python-multipart>=0.0.27,<1.0", "cryptography>=49.0.0,<51.0", "pynacl>=1.6.2,<2.0",
    "websockets>=15.0.1,<16.0", "boto3>=1.43.117,<2.0", "azure-identity>=1.25.2,<2.0",
    "azure-storage-blob>=12.28.0,<13.0", "mcp>=2.3.0,<3", "httpx2>=2.10.0,<3", "litellm-proxy-extras==0.4.110",
    "litellm-enterprise==0.1.83", "restrictedpython>=8.5,<9.0", "rich>=13.9.4,<14.0", "inquirerpy>=0.3.4,<1.0",
    "tomlkit>=0.13.3,<1.0", "polars>=1.38.1,<2.0", "soundfile>=0.12.1,<1.0", "pyroscope-io>=0.8.16,<1.0",
    "expression>=5.6.0,<6.0", "backports-zstd>=1.0.0,<2.0", "semver>=3.0.4,<4",
]

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
    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.serving import serve
    from api.settings import Settings

    # The per-key rate limiter stays on the path, with a limit this load never reaches.
    settings = Settings(data_dir=Path(data_dir), host="127.0.0.1", port=port, rate_limit_key_per_minute=60_000_000,
                        rate_limit_key_burst=1_000_000)
    container = bootstrap(settings)
    pauses = _record_gc_pauses()
    phases = _time_phases() if os.environ.get(PHASES_ENV) else []
    app = create_app(container)
    workers: Any = None
    where = os.environ.get(WORKERS_ENV, "none")
    if where != "none" and os.environ.get(PROCESS_ENV, "0") == "0":  # the relay, projections, sweeper and signer
        from api.bootstrap import nats_url_for
        from api.worker_process import spawn
        from api.workers import BackgroundWorkers, in_process_workers

        nats_url = nats_url_for(container)
        if where == "in-process":  # as `nexus up` ran them before it gave them a process of their own
            workers = BackgroundWorkers(in_process_workers(container, nats_url))
            workers.start()
        else:  # as `nexus up` runs them
            workers = spawn(settings, database_url=container.database.admin_url,
                            app_database_url=container.database.app_url, nats_url=nats_url)
        signing = threading.Event()
        threading.Thread(target=container.signer.run, args=(signing, settings.checkpoint_interval_s),
                         name="checkpoint-signer", daemon=True).start()
    try:
        serve(timed_app(app, phases) if os.environ.get(PHASES_ENV) else app, settings, log_level="warning",
              access_log=False, reuse_port=True)
    finally:
        if workers is not None:
            signing.set()
            if isinstance(workers, subprocess.Popen):
                from api.child_processes import stop

                stop([workers])
            else:
                workers.stop()
            container.close()  # and the embedded NATS it started
        n = os.environ.get(PROCESS_ENV, "0")
        (Path(data_dir) / GC_PAUSES_FILE.format(n=n)).write_bytes(orjson.dumps(pauses))
        (Path(data_dir) / PHASES_FILE.format(n=n)).write_bytes(orjson.dumps(phases))


PHASES_ENV = "NEXUS_BENCH_PHASES"  # set by --phases
PHASES_FILE = "gateway-phases-{n}.json"
PROCESS_ENV = "NEXUS_BENCH_GATEWAY_PROCESS"  # which of --gateway-processes this one is
WORKERS_ENV = "NEXUS_BENCH_WORKERS"  # --workers: none, process or in-process


def _time_phases() -> list[tuple[float, str, float]]:
    """(wall time, phase, ms) of the gateway's steps under the load, timed in its process (--phases)."""
    import application.gateway as gateway_module
    from adapters.postgres.ledger_store import PostgresLedger
    from adapters.providers.openai_compatible import OpenAICompatibleProvider
    from application.gateway import Gateway
    from application.identity import IdentityService
    from application.privacy import PrivacyService

    phases: list[tuple[float, str, float]] = []

    def timed(fn: Any, label: str) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                phases.append((time.time(), label, (time.perf_counter() - started) * 1000))
        return wrapper

    for owner, name, label in (
        (Gateway, "complete", "Gateway.complete"),
        (OpenAICompatibleProvider, "complete", "of which: upstream round trip"),
        (PostgresLedger, "append_async", "of which: durable append"),
        (gateway_module, "_confirmed", "of which: waiting for the key's confirmation"),
        (Gateway, "_seal", "of which: sealing, with the wait for its reads"),
        (IdentityService, "confirm_async", "key confirmation read (when its condition moved, or a stream)"),
        (PrivacyService, "sealer_async", "overlapped: sealing reads"),
    ):
        setattr(owner, name, timed(getattr(owner, name), label))
    return phases


def timed_app(app: Any, phases: list[tuple[float, str, float]]) -> Any:
    """The ASGI app, timed from each HTTP request to its response's start (also ops/bench/gateway_phases.py)."""
    async def measured(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = time.perf_counter()

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                phases.append((time.time(), "ASGI app, request to response start", (time.perf_counter() - started) * 1000))
            await send(message)

        await app(scope, receive, sending)

    return measured


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phases_summary(phases: list[list[Any]], since: float, until: float) -> dict[str, object]:
    by_label: dict[str, list[float]] = {}
    for at, label, ms in phases:
        if since <= at <= until:
            by_label.setdefault(label, []).append(ms)
    summary: dict[str, object] = {}
    for label, ms in by_label.items():
        ms.sort()
        summary[label] = {"n": len(ms), **{f"p{p}_ms": round(ms[min(len(ms) - 1, len(ms) * p // 100)], 3)
                                           for p in (50, 90, 99)}}
    return summary


GC_PAUSES_FILE = "gateway-gc-pauses-{n}.json"


def _record_gc_pauses() -> list[tuple[float, int, float]]:
    """(wall time, generation, pause ms) of every garbage collection in this process, from now on."""
    import gc

    pauses: list[tuple[float, int, float]] = []
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.time(), info["generation"], (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(callback)
    return pauses


def _gc_summary(pauses: list[list[float]], since: float, until: float) -> dict[str, object]:
    """The collections that ran while one load ran: how many per generation, the longest, the total."""
    window = [p for p in pauses if since <= p[0] <= until]
    return {f"gen{g}": {"collections": len(ms), "max_ms": round(max(ms), 2), "total_ms": round(sum(ms), 1)}
            for g in (0, 1, 2) if (ms := [p[2] for p in window if p[1] == g])}


# --- the LiteLLM proxy reference -------------------------------------------------------------------


def ensure_litellm_venv(venv: Path = LITELLM_VENV) -> Path:
    """The proxy's virtualenv, made now if absent; returns its `litellm` command."""
    command = venv / "bin" / "litellm"
    stamp = venv / ".nexus-requirements"
    wanted = "\n".join(LITELLM_PROXY_REQUIREMENTS)
    if command.exists() and stamp.exists() and stamp.read_text() == wanted:
        return command
    print(f"making the LiteLLM proxy's virtualenv in {venv} (once, about 2 minutes)", file=sys.stderr)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *LITELLM_PROXY_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return command


def start_litellm_proxy(command: Path, folder: Path, upstream_port: int, port: int,
                        master_key: str) -> subprocess.Popen[bytes]:
    """One worker, no database, the fast upstream as model `bench`; access logs off (as ours are)."""
    config = folder / "litellm-config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench-upstream\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "NEXUS_"))}
    env.update(LITELLM_MASTER_KEY=master_key, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
               PYTHONPATH="")
    log = open(folder / "litellm.log", "wb")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen([str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "1"], env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=log)


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


def _overhead(target: dict, direct: dict) -> dict:
    return {f"{p}_ms": round(target[f"{p}_ms"] - direct[f"{p}_ms"], 3)
            for p in ("p50", "p90", "p99") if target[f"{p}_ms"] is not None and direct[f"{p}_ms"] is not None}


def _ratios(ours: dict, theirs: dict) -> dict:
    """How many times lower our overhead is than the proxy's, per percentile (None if ours is <= 0)."""
    return {f"{p}_x": round(theirs[f"{p}_ms"] / ours[f"{p}_ms"], 2) if ours.get(f"{p}_ms", 0) > 0 else None
            for p in ("p50", "p99") if f"{p}_ms" in ours and f"{p}_ms" in theirs}


def _targets(result: dict) -> None:
    at_200 = next((r for r in result["rates"] if r["rate_per_s"] == 200), None)
    if at_200 is None:
        return
    targets = {
        "overhead_p50_le_2ms": at_200["overhead"].get("p50_ms", 1e9) <= 2.0,
        "overhead_p99_le_10ms": at_200["overhead"].get("p99_ms", 1e9) <= 10.0,
        "zero_lost_records": at_200["records"]["all_recorded"],
    }
    if at_200.get("vs_litellm"):
        targets["at_least_5x_lower_than_litellm_p50"] = (at_200["vs_litellm"].get("p50_x") or 0) >= 5
    result["targets_at_200_per_s"] = targets


def median_of(paths: list[str]) -> dict:
    """The median of each figure over several runs' JSON reports (same rates), with the runs' values listed."""
    runs = [json.loads(Path(p).read_text()) for p in paths]

    def merge(values: list) -> object:
        first = values[0]
        if isinstance(first, dict):
            return {k: merge([v.get(k) for v in values]) for k in first}
        if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in values):
            return [merge([v[i] for v in values]) for i in range(len(first))]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values) and numbers:
            return {"median": statistics.median(numbers), "runs": numbers}
        return first

    merged = merge(runs)
    merged["runs"] = paths  # type: ignore[index]
    return merged  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="50,200,500")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--profile", default="", help="py-spy the gateway during the 200/s gateway run, only samples holding the GIL (its Python CPU); output file")
    parser.add_argument("--gateway-processes", type=int, default=1,
                        help="API processes sharing the port (SO_REUSEPORT), as `nexus up --processes N` runs them")
    parser.add_argument("--profile-rate", default="200", help="the rate whose gateway run --profile records")
    parser.add_argument("--workers", choices=("none", "process", "in-process"), default="none",
                        help="also run the relay, projections, sweeper and signer: in a process of their own, as"
                             " `nexus up` does, or in the (first) API process, as it did before")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy reference")
    parser.add_argument("--record-before-upstream", action="store_true",
                        help="strict recording (NEXUS_RECORD_BEFORE_UPSTREAM=on): a commit before each upstream call")
    parser.add_argument("--phases", action="store_true", help="time the gateway's steps in its process, per rate")
    parser.add_argument("--output", default="", help="also write the JSON report to this file")
    parser.add_argument("--median", nargs="+", default=None, metavar="RUN.json", help="medians of earlier reports")
    args = parser.parse_args()
    if args.median:
        print(json.dumps(median_of(args.median), indent=2))
        return
    rates = [float(r) for r in args.rates.split(",")]
    litellm = None if args.no_litellm else ensure_litellm_venv()

    from adapters.embedded import free_port, stop_embedded_postgres, wait_for_port
    from api.bootstrap import bootstrap
    from api.settings import Settings
    from application.gateway import GatewayConfig
    from domain.pricing import Price

    data_dir = Path(tempfile.mkdtemp(prefix="nexus-bench-gw-"))
    container = bootstrap(Settings(data_dir=data_dir))
    container.identity.create_tenant("bench")
    key, _ = container.identity.issue_key("bench", ["inference", "read"], "bench")
    up_port, gw_port, proxy_port = free_port(), free_port(), free_port()
    container.deployments.configure("bench", name="fast", provider="openai_compatible", model="bench-upstream",
                                    model_name="bench", base_url=f"http://127.0.0.1:{up_port}/v1",
                                    price=Price(2_500_000, 10_000_000, "USD", "bench"), api_key="sk-bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({PHASES_ENV: "1"} if args.phases else {}),
           WORKERS_ENV: args.workers, "NEXUS_RECORD_BEFORE_UPSTREAM": "on" if args.record_before_upstream else "off"}
    upstream = subprocess.Popen([sys.executable, __file__, "_upstream", str(up_port)], env=env)
    gateways = [subprocess.Popen([sys.executable, __file__, "_gateway", str(data_dir), str(gw_port)],
                                 env={**env, PROCESS_ENV: str(n)}) for n in range(args.gateway_processes)]
    processes = [*gateways, upstream]
    master_key = "sk-bench-" + secrets.token_hex(16)
    proxy = None
    if litellm is not None:
        proxy = start_litellm_proxy(litellm, data_dir, up_port, proxy_port, master_key)
        processes.append(proxy)
    config = GatewayConfig()
    windows: list[tuple[float, float, float]] = []  # (rate, start, end) of each load through the gateway
    result: dict = {"benchmark": "gateway overhead", "duration_s": args.duration, "ledger": "PostgreSQL 18 embedded,"
                    " synchronous_commit on", "content_sealing": True,
                    "gateway": {"server": f"uvicorn, {args.gateway_processes} process(es) on one port, uvloop + httptools",
                                "workers": args.workers,
                                "record_requested_after_s": config.record_requested_after_s,
                                "record_before_upstream": args.record_before_upstream,
                                "gil_switch_interval_ms": Settings().gil_switch_interval_ms},
                    "litellm_proxy_reference": "litellm 1.110.2 proxy, one worker, no database" if proxy else "not run",
                    "load": os.getloadavg(), "rates": []}
    try:
        os.sched_setaffinity(0, {1})  # the generator on CPU 1 (RECIPES: load generation)
        wait_for_port("127.0.0.1", up_port)
        wait_for_port("127.0.0.1", gw_port, timeout=60)
        if proxy is not None:
            wait_for_port("127.0.0.1", proxy_port, timeout=120)
        auth = {"authorization": f"Bearer {key.token}", "content-type": "application/json"}
        proxy_auth = {"authorization": f"Bearer {master_key}", "content-type": "application/json"}
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        for rate in rates:
            direct = asyncio.run(run_load(direct_url, auth, rate, args.duration))
            profiler = None
            if args.profile and rate == float(args.profile_rate):
                profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--gil",
                                             "--format", "raw", "-o", args.profile, "-r", "200",
                                             "-d", str(int(args.duration)), "-p", str(gateways[0].pid)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            window_start, cpu_before = time.time(), sum(_cpu_seconds(g.pid) for g in gateways)
            through = asyncio.run(run_load(gateway_url, auth, rate, args.duration))
            windows.append((rate, window_start, time.time()))
            cpu_ms = (sum(_cpu_seconds(g.pid) for g in gateways) - cpu_before) * 1000
            if profiler is not None:
                profiler.wait(timeout=args.duration + 30)
            check = _check_receipts(container, through.pop("receipts"))
            direct.pop("receipts")
            entry = {"rate_per_s": rate, "direct": direct, "gateway": through, "overhead": _overhead(through, direct),
                     # the gateway process's CPU (all its threads) per answered request: steadier than latency
                     "gateway_cpu_ms_per_request": round(cpu_ms / max(through["ok"], 1), 3),
                     "records": {**check, "all_recorded": check["lost"] == 0
                                 and check["responses_with_receipt"] == through["ok"] == through["sent"]}}
            if proxy is not None:
                reference = asyncio.run(run_load(proxy_url, proxy_auth, rate, args.duration))
                reference.pop("receipts")
                entry["litellm_proxy"] = reference
                entry["litellm_overhead"] = _overhead(reference, direct)
                entry["vs_litellm"] = _ratios(entry["overhead"], entry["litellm_overhead"])
            result["rates"].append(entry)
        _targets(result)
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        container.close()
        stop_embedded_postgres(data_dir)
    pauses, phases = [], []
    for n in range(args.gateway_processes):
        gc_file, phases_file = data_dir / GC_PAUSES_FILE.format(n=n), data_dir / PHASES_FILE.format(n=n)
        pauses += orjson.loads(gc_file.read_bytes()) if gc_file.exists() else []
        phases += orjson.loads(phases_file.read_bytes()) if phases_file.exists() else []
    for entry, (_, since, until) in zip(result["rates"], windows, strict=False):
        entry["gateway_gc_pauses"] = _gc_summary(pauses, since, until)
        if phases:
            entry["gateway_phases"] = _phases_summary(phases, since, until)
    report = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(report)
    print(report)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        serve_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_gateway":
        serve_gateway(sys.argv[2], int(sys.argv[3]))
    else:
        main()
