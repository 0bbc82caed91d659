"""bench/models.py in its --quick configuration (3 models, real servers on loopback): it runs to its
RESULT line, and the figures it writes hold what the acceptance of issue 13 reads from them."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.servers import shared_data_dir

ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(r"RESULT models=(\d+) mem_ratio=(\S+) throughput_ratio=(\S+) swap_errors=(\d+)")


def test_models_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "bench/models.py", "--quick", "--data-dir", str(shared_data_dir()), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    last = done.stdout.strip().splitlines()[-1]
    match = RESULT.fullmatch(last)
    assert match, last
    fig = json.loads(out.read_text())
    assert int(match[1]) == fig["config"]["models"] == 3
    assert float(match[2]) == round(fig["mem_ratio"], 2)
    assert float(match[3]) == round(fig["throughput_ratio"], 2)
    assert int(match[4]) == fig["swap_errors"] == 0

    assert fig["config"]["classes_per_model"] == 100 and fig["config"]["samples_M"] == 20
    assert fig["analytic_bytes"]["class_cache"] == 20 * 100 * fig["config"]["embed_dim_D"] * 4
    assert [m["models"] for m in fig["memory"]] == [1, 3]
    assert all(m["rss"] > 0 for m in fig["memory"])
    assert math.isfinite(fig["mem_ratio"])
    assert {t["run"] for t in fig["throughput_runs"]} == {"single", "spread"}
    assert all(t["errors"] == 0 and t["images_per_s"] > 0 for t in fig["throughput_runs"])

    assert [s["trigger"] for s in fig["swaps"]] == ["reload", "watcher"]
    for swap in fig["swaps"]:
        assert swap["old"] != swap["new"]
        assert swap["ok"] and swap["errors"] == 0 and swap["other_versions"] == 0
        assert swap["old_answers"] > 0 and swap["new_answers"] > 0  # the load spanned the swap
        assert swap["sent_after_swap"] > 0 and swap["old_after_swap"] == 0
