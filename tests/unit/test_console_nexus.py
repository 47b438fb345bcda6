"""The console's folds of a NEXUS run (ui/src/nexus.ts: SSE progress, calls in causal layers, models joined by
calls, calls in flight), specified in ui/tests/nexus.test.mjs and run with Node's own test runner on the
module compiled by the console's TypeScript. Node and ui/node_modules are what `make console` needs anyway."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[2] / "ui"


def test_the_console_folds_a_nexus_run_as_its_specification_says(tmp_path: Path) -> None:
    tsc = UI / "node_modules" / ".bin" / "tsc"
    if shutil.which("node") is None or not tsc.is_file():
        pytest.fail("node and ui/node_modules are needed (`make console` installs them)", pytrace=False)
    subprocess.run([str(tsc), "--ignoreConfig", "--outDir", str(tmp_path), "--module", "es2022", "--target", "es2022",
                    "--strict", "--skipLibCheck", "src/nexus.ts"], cwd=UI, check=True)
    (tmp_path / "package.json").write_text('{"type": "module"}\n')  # the compiled file is an ES module
    done = subprocess.run(["node", "--test", "tests/nexus.test.mjs"], cwd=UI, capture_output=True, text=True,
                          env={**os.environ, "NEXUS_JS": str(tmp_path / "nexus.js")}, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
