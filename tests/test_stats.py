"""``greenqueue stats``: the figures a live server reports, stale sockets, the offline log."""
import importlib.util
import json
import os
import signal
import socket
import stat
import time
import subprocess

import pytest

from greenqueue import control
from tests.serving import (HAS_DISK, ROOT, Proc, control_sockets, greenqueue, needs_disk,
                           procs, run_server, stats_json, wait_until)

__all__ = ["procs"]
HAS_SUMMARY = importlib.util.find_spec("greenqueue.log.inspect") is not None
needs_summary = pytest.mark.skipif(not HAS_SUMMARY, reason="greenqueue.log.inspect.summarize "
                                   "(issue 4) is not in this tree")


def enqueue(server, user, seconds, **query):
    response = server.get("/report", params={"user": user, "seconds": seconds, **query})
    assert response.status_code == 202
    return response.json()["task_id"]


def test_stats_json_reports_what_the_test_did(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--graceful-timeout", "0.5")
    procs.append(server)
    for n in range(3):
        enqueue(server, f"quick{n}", 0)
    for n in range(2):
        enqueue(server, f"slow{n}", 30)
    enqueue(server, "later", 0, delay=3600)
    server.wait_for(r"report for user quick\d: done", count=3)
    server.wait_for(r"report for user slow\d: started", count=2)

    report = stats_json(data)
    assert report["data_dir"] == str(data)
    assert report["stale"] == [] and report["unresponsive"] == []
    [me] = report["processes"]
    assert me["pid"] == server.pid and me["role"] == "server"
    assert me["enqueued"] == 6
    assert me["processed"] == 3
    assert me["in_flight"] == 2
    assert me["delayed"] == 1 and me["ready"] == 0
    assert me["failed"] == 0 and me["retried"] == 0 and me["dead"] == 0
    assert me["rss"] > 10 * 2**20 and 0 < me["uss"] <= me["rss"]
    assert isinstance(me["rss_growth"], int)
    assert me["queued_bytes"] > 0            # the delayed task's payload is held in memory
    assert me["cpu_seconds"] > 0 and me["cpu_percent"] >= 0
    assert me["enqueue_rate"] > 0            # six enqueues within the last 10 s
    assert me["open_fds"] > 3
    assert me["greenlets"] >= 100            # the task workers at least
    assert me["oldest_ready_age"] is None    # nothing is waiting for a worker
    assert me["uptime"] > 0
    if HAS_DISK:
        assert me["log_segments"] >= 1 and me["log_bytes"] > 0
    total = report["total"]
    assert total["processes"] == 1 and total["enqueued"] == 6

    # the wait samples arrive with the next 1/8 s tick: enqueue until one is taken
    def sampled():
        enqueue(server, "sample", 0)
        return stats_json(data)["processes"][0]["wait_samples"] > 0
    wait_until(sampled, timeout=10, interval=0.2, what="a wait sample")
    me = stats_json(data)["processes"][0]
    assert 0 <= me["wait_p50"] <= me["wait_p99"]

    human = subprocess.run(greenqueue("stats", "--data-dir", data), capture_output=True,
                           text=True, timeout=30, cwd=ROOT)
    assert human.returncode == 0
    for label in ("memory RSS", "memory USS", "ready", "delayed", "in flight", "processed",
                  "wait p99", "oldest ready task age", str(server.pid)):
        assert label in human.stdout, label
    assert server.terminate() == 0


def test_control_socket_is_private_and_removed_on_exit(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--graceful-timeout", "0.5")
    procs.append(server)
    [name] = control_sockets(data)
    assert name == f"control-{server.pid}.sock"
    mode = os.stat(data / name).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert server.terminate() == 0
    assert control_sockets(data) == []


def test_stale_socket_of_a_killed_process_is_reported_and_removed(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path)
    procs.append(server)
    enqueue(server, "left", 30)
    server.wait_for("report for user left: started")
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    assert control_sockets(data) == [f"control-{server.pid}.sock"]
    # and a socket file that nobody ever listened on, as a crash mid-start leaves
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(data / "control-4194000.sock"))
    dead.close()

    report = stats_json(data)
    assert sorted(report["stale"]) == sorted([server.pid, 4194000])
    assert report["processes"] == [] and report["total"] is None
    assert control_sockets(data) == []
    log = report["log"]
    if HAS_SUMMARY:
        assert log["pending"] == 1 and log["delayed"] == 0 and log["dead"] == 0, log
    human = subprocess.run(greenqueue("stats", "--data-dir", data), capture_output=True,
                           text=True, timeout=30, cwd=ROOT)
    assert human.returncode == 0
    assert "no live greenqueue process" in human.stdout


@needs_disk
@needs_summary
def test_offline_stats_count_pending_delayed_and_dead(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--graceful-timeout", "0.5")
    procs.append(server)
    enqueue(server, "soon", 30)
    enqueue(server, "later", 0, delay=3600)
    server.wait_for("report for user soon: started")
    assert server.terminate() == 0
    report = stats_json(data)
    assert report["processes"] == [] and report["stale"] == []
    log = report["log"]
    assert log["pending"] == 1 and log["delayed"] == 1 and log["dead"] == 0
    human = subprocess.run(greenqueue("stats", "--data-dir", data), capture_output=True,
                           text=True, timeout=30, cwd=ROOT)
    assert "1 pending, 1 delayed, 0 dead" in human.stdout


def test_missing_data_dir_is_an_error_not_a_crash(tmp_path):
    out = subprocess.run(greenqueue("stats", "--data-dir", tmp_path / "nowhere"),
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 1
    assert "no data directory" in out.stdout and "Traceback" not in out.stderr


def test_watch_refreshes_until_interrupted(tmp_path, procs):
    data = tmp_path / "data"
    server = run_server(tmp_path, "--graceful-timeout", "0.5")
    procs.append(server)
    watch = Proc(greenqueue("stats", "--data-dir", data, "--json", "--watch", "0.2"),
                 tmp_path / "watch.log")
    procs.append(watch)
    wait_until(lambda: watch.output().count("\n") >= 3, what="three refreshes")
    watch.signal(signal.SIGINT)
    assert watch.wait(10) == 0
    reports = [json.loads(line) for line in watch.output().splitlines() if line.startswith("{")]
    assert len(reports) >= 3
    assert {r["processes"][0]["pid"] for r in reports} == {server.pid}


def test_query_all_handles_a_socket_that_answers_nonsense(tmp_path):
    # a process that accepts but never answers is "unresponsive", not stale, and stays
    data = tmp_path
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(data / "control-4194001.sock"))
    listener.listen(1)
    try:
        live, stale, unresponsive = control.query_all(str(data), timeout=0.3)
    finally:
        listener.close()
    assert (live, stale, unresponsive) == ([], [], [4194001])
    assert control_sockets(data) == ["control-4194001.sock"]


# -- the rolling figures, in process ---------------------------------------------------------------

class _Counters:
    enqueued = processed = failed = 0


class _Started:
    """What sample_wait reads of a task: its due time (0: none) and its enqueue time."""

    def __init__(self, publish_at, enqueued_at):
        self.publish_at = publish_at
        self.enqueued_at = enqueued_at


def test_rates_come_from_counter_deltas_over_the_window():
    from greenqueue.metrics import Metrics
    metrics = Metrics()
    metrics.counters = counters = _Counters()
    metrics._tick_counters()
    first = metrics.ticks[-1][0]
    counters.enqueued, counters.processed, counters.failed = 300, 200, 100
    wait_until(lambda: metrics.rates()[0] > 0 and time.monotonic() - first > 0.1)
    enqueue_rate, process_rate, cpu = metrics.rates()
    span = time.monotonic() - first
    assert 300 / (span + 0.05) < enqueue_rate <= 300 / (span - 0.05)
    assert process_rate == pytest.approx(enqueue_rate)   # processed + failed
    assert cpu >= 0


def test_wait_percentiles_cover_the_last_minute_only():
    from greenqueue.metrics import WAIT_WINDOW, Metrics
    metrics = Metrics()
    assert metrics.wait_percentiles() == (None, None, 0)
    now = time.time()
    metrics.waits.append((now - WAIT_WINDOW - 5, 999.0))          # too old to count
    for n in range(1, 101):
        metrics.waits.append((now, n / 100))
    p50, p99, samples = metrics.wait_percentiles()
    assert samples == 100 and p50 == pytest.approx(0.51) and p99 == pytest.approx(1.0)
    metrics.sample_due = True
    metrics.sample_wait(_Started(publish_at=0.0, enqueued_at=time.time() - 2))
    assert metrics.sample_due is False and 2 <= metrics.waits[-1][1] < 3


def test_a_data_dir_too_long_for_a_unix_socket_still_serves(tmp_path, procs):
    data = tmp_path / ("d" * 120)
    server = run_server(tmp_path, "--graceful-timeout", "0.5", data_dir=data)
    procs.append(server)
    assert server.get("/").status_code == 200
    assert "no control socket" in server.output()
    assert server.terminate() == 0


@needs_disk
def test_stats_shows_each_schedule_with_its_next_and_last_run(tmp_path, procs):
    ticks = tmp_path / "ticks.txt"
    server = run_server(tmp_path, app="tests.periodic_app:app", env={"GQ_TICKS": str(ticks)})
    procs.append(server)
    wait_until(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2,
               what="two heartbeats")
    [me] = stats_json(tmp_path / "data")["processes"]
    [sched] = me["schedules"]
    assert sched["task"] == "tests.periodic_app:heartbeat" and sched["leader"] is True
    assert sched["last_run"] is not None and sched["next_run"] > sched["last_run"]
    text = subprocess.run(greenqueue("stats", "--data-dir", tmp_path / "data"), cwd=ROOT,
                          capture_output=True, text=True, timeout=30).stdout
    assert "schedules:" in text and "every 1 s" in text and f"leader pid {server.pid}" in text
