"""Where a gateway request's time goes: each phase timed inside the gateway process. Prints a table.

    .venv/bin/python ops/bench/gateway_phases.py [--requests 600]

The API runs in this process (uvicorn in a thread, embedded PostgreSQL with synchronous_commit on,
content sealing on), in front of ops/bench/gateway.py's fast fake upstream in its own process.
Requests are sent one at a time (10 ms apart) and the methods on the path are wrapped with timers:
authentication, the sealing reads, the upstream call, the ledger append, the gateway's whole use
case and the ASGI app as a whole. Percentiles skip each phase's first 20 samples (warm-up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Run as a script, Python puts ops/bench/ first on the path, where bench scripts named like packages
# (ops/bench/graphql.py) would shadow them: import from the repository's root only.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()

    import httpx

    import api.gateway.common as common
    from adapters.embedded import free_port, stop_embedded_postgres, wait_for_port
    from api.app import create_app
    from api.bootstrap import bootstrap
    from api.settings import Settings
    from domain.pricing import Price
    from ops.bench.gateway import timed_app
    from tests.fakes.server import ServerThread

    timings: dict[str, list[float]] = {}

    def timed(label: str, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:
            async def wrapper_async(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    timings.setdefault(label, []).append((time.perf_counter() - started) * 1000)
            return wrapper_async

        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timings.setdefault(label, []).append((time.perf_counter() - started) * 1000)
        return wrapper

    data_dir = Path(tempfile.mkdtemp(prefix="nexus-bench-phases-"))
    container = bootstrap(Settings(data_dir=data_dir, rate_limit_key_per_minute=60_000_000,
                                   rate_limit_key_burst=1_000_000))
    container.identity.create_tenant("bench")
    key, _ = container.identity.issue_key("bench", ["inference", "read"], "bench")
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "ops" / "bench" / "gateway.py"), "_upstream", str(port)])
    try:
        container.deployments.configure(
            "bench", name="fast", provider="openai_compatible", model="bench-upstream", model_name="bench",
            base_url=f"http://127.0.0.1:{port}/v1", price=Price(2_500_000, 10_000_000, "USD", "bench"),
            api_key="sk-bench")
        identity, privacy, ledger, gateway = container.identity, container.privacy, container.ledger, container.gateway
        identity.authenticate = timed("authentication: key read (first request)", identity.authenticate, False)  # type: ignore[method-assign]
        identity.confirm_async = timed("key confirmation read (only when its condition moved)", identity.confirm_async, True)  # type: ignore[method-assign]
        privacy.sealer_async = timed("sealing reads (overlapped)", privacy.sealer_async, True)  # type: ignore[method-assign]
        ledger.append_async = timed("ledger append (durable)", ledger.append_async, True)  # type: ignore[method-assign]
        gateway.complete = timed("Gateway.complete", gateway.complete, True)  # type: ignore[method-assign]
        for provider in set(gateway._providers.values()):
            provider.complete = timed("upstream round trip", provider.complete, True)  # type: ignore[method-assign]
        # asyncio.to_thread as the gateway's modules see it (the module is shared: every hop is timed)
        hop = common.asyncio.to_thread

        async def to_thread(fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return await hop(fn, *a, **k)
            finally:
                name = getattr(fn, "__name__", "?")
                timings.setdefault(f"worker-thread hop + {name}", []).append((time.perf_counter() - started) * 1000)

        common.asyncio.to_thread = to_thread  # type: ignore[assignment]
        app = create_app(container)

        asgi: list[tuple[float, str, float]] = []
        measured = timed_app(app, asgi)

        wait_for_port("127.0.0.1", port)
        server = ServerThread(measured, lifespan="on").start()
        try:
            with httpx.Client(headers={"authorization": f"Bearer {key.token}"}) as http:
                for _ in range(args.requests):
                    started = time.perf_counter()
                    response = http.post(f"{server.url}/v1/chat/completions", json=BODY)
                    timings.setdefault("client: round trip through the gateway", []).append(
                        (time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    time.sleep(0.01)
                for _ in range(200):
                    started = time.perf_counter()
                    http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY).raise_for_status()
                    timings.setdefault("client: direct round trip", []).append((time.perf_counter() - started) * 1000)
        finally:
            server.stop()
    finally:
        upstream.kill()
        container.close()
        stop_embedded_postgres(data_dir)
    for _, label, ms in asgi:
        timings.setdefault(label, []).append(ms)
    print(f"{'phase':45s} {'n':>5s} {'p50':>8s} {'p90':>8s} {'p99':>8s}   (ms; load {os_load()})")
    for label, values in timings.items():
        kept = sorted(values[20:])
        if len(kept) < 10:
            continue
        print(f"{label:45s} {len(kept):5d} {kept[len(kept) // 2]:8.3f} {kept[int(len(kept) * 0.9)]:8.3f} "
              f"{kept[int(len(kept) * 0.99)]:8.3f}")


def os_load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
