"""The console's weight and first paint: gzipped initial JS (what index.html loads before any lazy page)
and, in headless Debian Chromium on localhost, first contentful paint and the time until the sign-in
form is on screen (first meaningful paint), median of several cold loads. Prints JSON.

    python ops/bench/ui.py [--runs 5]      (needs ui/dist: `make up` or `make test` builds it)
Targets (issue 6): initial JS <= 500 KB gzipped, first meaningful paint <= 1.5 s.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import re
import statistics
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIST = Path(__file__).resolve().parents[2] / "ui" / "dist"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def sizes() -> dict[str, object]:
    index = (DIST / "index.html").read_text()
    initial = sorted(set(re.findall(r'(?:src|href)="/(assets/[^"]+\.js)"', index)))
    css = sorted(set(re.findall(r'href="/(assets/[^"]+\.css)"', index)))
    every = sorted(p.relative_to(DIST).as_posix() for p in (DIST / "assets").glob("*.js"))
    gz = {name: len(gzip.compress((DIST / name).read_bytes(), 9)) for name in every + css}
    return {
        "initial_js": initial,
        "initial_js_gzip_kb": round(sum(gz[n] for n in initial) / 1024, 1),
        "initial_css_gzip_kb": round(sum(gz[n] for n in css) / 1024, 1),
        "all_js_gzip_kb": round(sum(v for n, v in gz.items() if n.endswith(".js")) / 1024, 1),
        "lazy_chunks_gzip_kb": {n: round(v / 1024, 1) for n, v in gz.items() if n not in initial and n not in css},
    }


def paint(runs: int) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_Quiet, directory=str(DIST))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    fcp, fmp = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 800})  # cold cache each run
            page = context.new_page()
            page.goto(url, wait_until="commit")
            page.get_by_role("heading", name="NexusAI Console").wait_for()
            fmp.append(page.evaluate("performance.now()"))
            page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
            fcp.append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
            context.close()
        browser.close()
    server.shutdown()
    return {"runs": runs, "first_contentful_paint_ms": round(statistics.median(fcp), 1),
            "first_meaningful_paint_ms": round(statistics.median(fmp), 1),
            "first_meaningful_paint_ms_max": round(max(fmp), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = {"dist": str(DIST), **sizes(), **paint(args.runs)}
    result["targets"] = {"initial_js_gzip_kb<=500": result["initial_js_gzip_kb"] <= 500,
                         "first_meaningful_paint_ms<=1500": result["first_meaningful_paint_ms"] <= 1500}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
