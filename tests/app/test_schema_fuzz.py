"""Schema fuzzing: schemathesis drives a live server (uvicorn, fake engine) from its own /openapi.json.

Bounded and reproducible: a fixed seed, a fixed example count per operation, one worker (a few
seconds). Every check runs except positive_data_acceptance: a class name's rules (no control or
format characters, the model's text context) are stricter than JSON Schema can state, so some
schema-valid names are rightly refused with 422.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.test_protocol_limits import live_server

pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency: pip install -e '.[dev]'")

SEED = 1
EXAMPLES = 30


def test_schemathesis_finds_no_failure(tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert cli, "the schemathesis command is not installed beside this Python"
    with live_server(tmp_path, token="fuzz-token", max_names_per_call=5) as port:
        run = subprocess.run(
            [
                cli, "run", f"http://127.0.0.1:{port}/openapi.json",
                "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--workers", "1",
                "--header", "Authorization: Bearer fuzz-token",
                "--exclude-checks", "positive_data_acceptance",
                "--no-color",
            ],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
