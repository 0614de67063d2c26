"""Hub-blocking report: a task that spins the CPU for 300 ms is named, with its id and stack, in
the log (once per task name), in ``greenqueue stats`` and in the metrics."""
import subprocess

import pytest
import requests

from tests.serving import ROOT, greenqueue, procs, run_server, stats_json, wait_until

__all__ = ["procs"]
SPIN = "tests.blocking_app:spin"


def blocked_by(data):
    [me] = stats_json(data)["processes"]
    return me


def test_a_task_that_spins_for_300_ms_is_named(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--metrics", app="tests.blocking_app:app")
    procs.append(server)
    first = requests.get(server.url + "/spin?ms=300", timeout=10).text
    wait_until(lambda: blocked_by(data)["hub_blocked_by"].get(SPIN, 0) >= 1,
               what="the spinning task counted")
    report = server.wait_for(r"task (\S+) \((\w+)\) blocked the gevent hub for more than 100 ms")
    assert report.groups() == (SPIN, first)
    log = server.output()
    assert "in spin" in log and "while time.perf_counter() < deadline" in log   # the stack

    second = requests.get(server.url + "/spin?ms=300", timeout=10).text
    wait_until(lambda: blocked_by(data)["hub_blocked_by"].get(SPIN, 0) >= 2,
               what="the second spin counted")
    me = blocked_by(data)
    assert me["hub_blocked_last"]["id"] == second and me["max_blocking_ms"] == 100
    assert server.output().count("blocked the gevent hub") == 1     # logged once per name
    human = subprocess.run(greenqueue("stats", "--data-dir", data), cwd=ROOT, timeout=30,
                           capture_output=True, text=True).stdout
    assert f"{SPIN} blocked the hub for more than 100 ms" in human
    assert f"last task {second}" in human

    prometheus = pytest.importorskip("prometheus_client.parser")
    text = requests.get(server.url + "/metrics", timeout=10).text
    [family] = [f for f in prometheus.text_string_to_metric_families(text)
                if f.name == "greenqueue_hub_blocked"]
    [sample] = [s for s in family.samples if s.name.endswith("_total")]
    assert sample.labels == {"task": SPIN} and sample.value >= 2


def test_zero_turns_the_check_off(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--max-blocking-ms", "0", app="tests.blocking_app:app")
    procs.append(server)
    requests.get(server.url + "/spin?ms=50", timeout=10)
    wait_until(lambda: blocked_by(data)["processed"] == 1, what="the spin ran")
    me = blocked_by(data)
    assert me["hub_blocked"] == 0 and me["max_blocking_ms"] is None
