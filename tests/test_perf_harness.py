"""The benchmark harness runs end to end: ``python -m perf --quick --scenario limit``.

A smoke test only: it checks that the harness starts, measures, prints its table and writes
valid JSON. It asserts no timing; the figures live in perf/results/ from real runs.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_limit_scenario_writes_json(tmp_path):
    env = dict(os.environ, PERF_RESULTS=str(tmp_path), PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "--quick", "--scenario", "limit", "--tasks", "2000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| limit |" in proc.stdout
    with open(tmp_path / "limit.json") as f:
        doc = json.load(f)
    assert doc["scenario"] == "limit"
    assert doc["parameters"]["tasks"] == 2000
    assert len(doc["repetitions"]) == 3
    assert {"python", "gevent", "greenqueue", "cpus"} <= set(doc["machine"])
    for key in ("enqueue_per_s", "process_per_s", "end_to_end_per_s", "log_bytes_per_task"):
        assert doc["results"][key] > 0
    assert (tmp_path / "TABLE.md").exists()
