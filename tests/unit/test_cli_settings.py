"""A bad NEXUS_* setting stops the `nexus` command with one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command, variable, value, words", [
    (["up"], "NEXUS_API_PROCESSES", "0", "Input should be greater than or equal to 1 (got '0')"),
    (["ledger", "head"], "NEXUS_PORT", "abc", "Input should be a valid integer"),
    (["ledger", "head"], "NEXUS_LEDGER_HASH", "md5", "Input should be 'blake3' or 'sha256'"),
    (["ledger", "head"], "NEXUS_PROJECTION_LINGER_MS", "-5", "Input should be greater than or equal to 0"),
    (["ledger", "head"], "NEXUS_RECORD_BEFORE_UPSTREAM", "maybe", "Input should be a valid boolean"),
])
def test_a_bad_setting_is_named_with_what_was_wrong(tmp_path, command, variable, value, words):
    env = {**os.environ, variable: value, "NEXUS_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "api.cli", *command], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode == 2
    assert f"Invalid setting {variable}" in said and words in said
    assert "Traceback" not in said
    assert not (tmp_path / "postgres").exists()  # nothing was started or written
