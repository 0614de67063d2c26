"""The whole cluster on a shared backend: what each process publishes, the server's counts,
``greenqueue stats --backend``, the ``greenqueue_cluster_*`` gauges (greenqueue/cluster.py)."""
import json
import os
import signal
import subprocess
import time

import pytest

import greenqueue
from greenqueue.cluster import STALE_AFTER, view
from greenqueue.envelope import Envelope, new_id
from greenqueue.log import open_log
from tests import backends
from tests.serving import ROOT, greenqueue as gq_argv, procs, run_server, wait_until

__all__ = ["procs"]


@pytest.fixture(params=["redis", "postgres"])
def url(request):
    url = backends.shared_url(request.param)
    yield url
    backends.drop(url)


def envelope(delay=0.0):
    now = time.time()
    return Envelope(new_id(), "tests.tasks:record", b"x", 0, now + delay if delay else 0.0, 0,
                    now)


def test_published_figures_and_the_servers_counts(url):
    a, b = open_log(url), open_log(url)
    try:
        a.publish({"pid": 11, "host": "h1", "wait_p99": float("inf"), "history": [(1.5, 2, 3)]})
        b.publish({"pid": 22, "host": "h2"})
        for env in (envelope(), envelope(), envelope(delay=3600)):
            a.append(env)
        [(claimed, _)] = b.claim(1)
        a.bury(envelope(), {"type": "Boom"})
        a.flush()
        found = a.cluster()
        assert {k: found[k] for k in ("ready", "delayed", "in_flight", "dead")} == {
            "ready": 1, "delayed": 1, "in_flight": 1, "dead": 1}
        assert found["backend"] == a.describe()
        one, two = found["processes"]
        assert (one["pid"], one["host"], one["owner"]) == (11, "h1", a.owner)
        assert (two["pid"], two["host"], two["owner"]) == (22, "h2", b.owner)
        assert one["wait_p99"] is None                # JSON has no infinity
        assert one["history"] == [[1.5, 2, 3]]
        assert 0 <= one["seen"] < 2
        a.close()                                     # a graceful stop takes its entry away
        assert [p["pid"] for p in b.cluster()["processes"]] == [22]
    finally:
        a.close()
        b.close()


def test_a_process_that_stopped_publishing_disappears_after_the_window(url):
    a, b = open_log(url), open_log(url)
    try:
        a.publish({"pid": 1})
        b.publish({"pid": 2})
        b._published = False   # as if killed: its entry stays behind
        b.close()
        assert [p["pid"] for p in a.cluster(stale_after=0.3)["processes"]] == [1, 2]
        time.sleep(0.4)
        a.publish({"pid": 1})
        assert [p["pid"] for p in a.cluster(stale_after=0.3)["processes"]] == [1]
        # deleted on the server, not only skipped
        assert [p["pid"] for p in a.cluster(stale_after=3600)["processes"]] == [1]
    finally:
        a.close()
        b.close()


def test_a_runtime_publishes_while_it_runs(url):
    runtime = greenqueue.Runtime(backend=url).start()
    try:
        def mine():
            return [p for p in view(backend=url)["processes"] if p["pid"] == os.getpid()]
        [me] = wait_until(mine, timeout=5, what="this process's figures")
        assert me["shared"] is True and me["enqueued"] == 0 and me["rss"] > 0
        assert me["greenlets"] is None and me["uss"] is None   # the light snapshot
        found = view()                                           # through the running runtime
        assert os.getpid() in [p["pid"] for p in found["processes"]]
    finally:
        runtime.stop(timeout=1)
    assert view(backend=url)["processes"] == []


def stats(*args):
    out = subprocess.run(gq_argv("stats", "--json", *args), cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_stats_and_metrics_show_two_servers_and_the_servers_counts(url, tmp_path, procs):
    pytest.importorskip("prometheus_client")
    from tests.test_metrics import scrape, value
    servers = []
    for name in ("a", "b"):
        server = run_server(tmp_path, "--backend", url, "--metrics", "--dashboard", "/gq",
                            "--graceful-timeout", "1", name=name,
                            data_dir=tmp_path / f"data-{name}")
        procs.append(server)
        servers.append(server)
    a, b = servers
    for user in range(3):
        assert a.get("/report", params={"user": user, "delay": 3600}).status_code == 202

    elsewhere = tmp_path / "nobody-here"   # no local process: the server alone tells
    elsewhere.mkdir()
    report = wait_until(
        lambda: (r := stats("--backend", url, "--data-dir", elsewhere)) and
        len(r["processes"]) == 2 and r, timeout=10, what="both servers in stats")
    assert sorted(p["pid"] for p in report["processes"]) == sorted([a.pid, b.pid])
    assert {p["role"] for p in report["processes"]} == {"server"}
    cluster = report["cluster"]
    assert (cluster["delayed"], cluster["ready"], cluster["dead"], cluster["processes"]) == \
        (3, 0, 0, 2)
    assert report["total"]["delayed"] == 3 and report["total"]["processes"] == 2
    assert report["log"] is None

    # without --backend: a local process on a shared backend shows its cluster
    local = stats("--data-dir", tmp_path / "data-a")
    assert sorted(p["pid"] for p in local["processes"]) == sorted([a.pid, b.pid])
    assert local["cluster"]["delayed"] == 3
    [mine] = [p for p in local["processes"] if p["pid"] == a.pid]
    assert mine["greenlets"] is not None   # the local process's own full answer
    human = subprocess.run(gq_argv("stats", "--backend", url, "--data-dir", elsewhere),
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "cluster: 2 live process(es)" in human.stdout and "3 delayed" in human.stdout
    assert str(a.pid) in human.stdout and str(b.pid) in human.stdout

    samples = scrape(b.url + "/metrics")
    assert value(samples, "greenqueue_cluster_delayed_tasks") == 3
    assert value(samples, "greenqueue_cluster_ready_tasks") == 0
    assert value(samples, "greenqueue_cluster_processes") == 2
    assert value(samples, "greenqueue_processes") == 1   # the counters stay this process's

    page = a.get("/gq/").text                            # the dashboard's overview
    assert 'id="cluster"' in page and "3 delayed" in page
    assert f"<th>{a.pid}</th>" in page and f"<th>{b.pid}</th>" in page

    os.kill(b.pid, signal.SIGKILL)
    b.wait(10)
    started = time.monotonic()
    wait_until(lambda: [p["pid"] for p in stats("--backend", url, "--data-dir",
                                                 elsewhere)["processes"]] == [a.pid],
               timeout=STALE_AFTER + 5, interval=0.5, what="the killed server to go")
    assert time.monotonic() - started > STALE_AFTER - 3   # gone once stale, not before
    assert a.terminate() == 0
    assert stats("--backend", url, "--data-dir", elsewhere)["processes"] == []


def test_stats_names_an_unreachable_backend(tmp_path):
    pytest.importorskip("redis")
    out = subprocess.run(gq_argv("stats", "--backend", "redis://127.0.0.1:1/0", "--data-dir",
                                 tmp_path), cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert "cannot reach Redis" in out.stderr and "Traceback" not in out.stderr
