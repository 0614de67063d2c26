"""Prometheus metrics: ``greenqueue run --metrics`` summed over workers, ``--metrics-bind``, and
``greenqueue.contrib.prometheus`` in an app's own server; parsed with prometheus-client."""
import os

import pytest
import requests

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.serving import control_sockets, procs, run_server, wait_until  # noqa: E402

__all__ = ["procs"]
APP = "tests.dead_app:app"
FRAGILE = "tests.dead_app:fragile"
OTHER = "tests.dead_app:other"


def scrape(url):
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def start(tmp_path, *args):
    env = {"GQ_BROKEN": str(tmp_path / "broken"), "GQ_RAN": str(tmp_path / "ran")}
    return run_server(tmp_path, "--graceful-timeout", "1", *args, app=APP, env=env)


def test_one_scrape_counts_a_thousand_tasks_over_two_workers(tmp_path, procs):
    server = start(tmp_path, "--workers", "2", "--metrics")
    procs.append(server)
    wait_until(lambda: len(control_sockets(tmp_path / "data")) == 2, what="both workers")
    for _ in range(10):
        requests.get(server.url + "/fill", params={"n": 100}, timeout=30).raise_for_status()

    def processed():
        samples = scrape(server.url + "/metrics")
        if value(samples, "greenqueue_processed_total", task=FRAGILE) == 1000:
            return samples
    samples = wait_until(processed, timeout=30, interval=0.1, what="1 000 processed")
    assert value(samples, "greenqueue_enqueued_total", task=FRAGILE) == 1000
    assert value(samples, "greenqueue_failed_total", task=FRAGILE) == 0
    assert value(samples, "greenqueue_processes") == 2
    for histogram in ("greenqueue_queue_wait_seconds", "greenqueue_run_seconds"):
        assert value(samples, histogram + "_count", task=FRAGILE) == 1000
        assert value(samples, histogram + "_bucket", task=FRAGILE, le="+Inf") == 1000
    assert value(samples, "greenqueue_ready_tasks") == 0
    assert value(samples, "greenqueue_resident_memory_bytes") > 2 * 10 * 2**20
    assert value(samples, "greenqueue_greenlets") >= 200     # two pools of 100 task workers
    assert value(samples, "greenqueue_log_bytes") > 0
    assert requests.get(server.url + "/fill", params={"n": 0}, timeout=10).json() == {"ids": []}


def test_metrics_bind_and_path_with_failures_and_the_dead_gauge(tmp_path, procs):
    (tmp_path / "broken").touch()
    server = start(tmp_path, "--metrics", "--metrics-path", "/_m", "--metrics-bind",
                   "127.0.0.1:0")
    procs.append(server)
    bind_url = "http://" + server.wait_for(r"metrics served at http://([\d.]+:\d+)").group(1)
    requests.get(server.url + "/fill", params={"n": 3}, timeout=10).raise_for_status()
    requests.get(server.url + "/fill", params={"n": 2, "task": "other"},
                 timeout=10).raise_for_status()
    wait_until(lambda: value(scrape(bind_url + "/metrics"), "greenqueue_dead_tasks") == 5,
               what="five dead tasks")
    for samples in (scrape(bind_url + "/anything"), scrape(server.url + "/_m")):
        assert value(samples, "greenqueue_dead_total", task=FRAGILE) == 3
        assert value(samples, "greenqueue_dead_total", task=OTHER) == 2
        assert value(samples, "greenqueue_failed_total", task=OTHER) == 2
        assert value(samples, "greenqueue_processed_total", task=OTHER) == 0
        assert value(samples, "greenqueue_in_flight_tasks") == 0
        assert value(samples, "greenqueue_processes") == 1
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 200  # the app's
    assert "greenqueue_processed" not in requests.get(server.url + "/metrics", timeout=10).text


def test_contrib_middleware_in_an_apps_own_server(tmp_path, make_runtime):
    from gevent.pywsgi import WSGIServer

    from greenqueue.contrib.prometheus import MetricsMiddleware, enable
    from tests.dead_app import app, fragile

    os.environ["GQ_BROKEN"] = str(tmp_path / "broken")
    os.environ["GQ_RAN"] = str(tmp_path / "ran")
    runtime = make_runtime()
    enable(runtime)
    server = WSGIServer(("127.0.0.1", 0), MetricsMiddleware(app, data_dir=str(tmp_path)),
                        log=None)
    server.start()
    try:
        for n in range(7):
            fragile.enqueue(n)
        assert runtime.join(5)
        url = f"http://127.0.0.1:{server.server_port}"
        samples = scrape(url + "/metrics")
        assert value(samples, "greenqueue_processed_total", task=FRAGILE) == 7
        assert value(samples, "greenqueue_enqueued_total", task=FRAGILE) == 7
        assert requests.get(url + "/fill", params={"n": 0}, timeout=10).json() == {"ids": []}
    finally:
        server.stop()
        os.environ.pop("GQ_BROKEN")
        os.environ.pop("GQ_RAN")
