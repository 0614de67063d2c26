"""Several processes sharing one Redis or PostgreSQL: exactly once in total, leases, outages.

Real servers (tests/backends.py: fail in CI, skip elsewhere), real child processes with
separate data directories, ``kill -9`` while a process holds claims; every wait polls a
condition against a deadline.
"""
import os
import signal
import socket
import subprocess
import sys
from collections import Counter

import pytest

import greenqueue
from greenqueue.errors import BackendUnavailable, ConfigError
from greenqueue.log import open_log
from tests import backends, shared_tasks
from tests.helpers import wait_until
from tests.log.helpers import ROOT
from tests.proxy import Proxy

CHILD = """
from gevent import monkey; monkey.patch_all()
import logging, os, signal, sys, gevent, greenqueue
logging.basicConfig(filename=os.environ["GQ_LOG"], level=logging.WARNING)
from gevent.event import Event
from tests import shared_tasks
url, name, count, task = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rt = greenqueue.Runtime(backend=url, path=sys.argv[5], concurrency=20, lease=1.0).start()
for i in range(count):
    getattr(shared_tasks, task).enqueue(f"{name}-{i}")
print("READY", flush=True)
stop = Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
stop.wait()
rt.stop(timeout=float(sys.argv[6]))
print("DONE", flush=True)
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request):
    url = backends.shared_url(request.param)
    yield url
    backends.drop(url)


def start(url, tmp_path, name, count=0, task="work", hang=False, stop_timeout=5.0):
    env = {**os.environ, "GQ_RAN": str(tmp_path / "ran.txt"), "GQ_LOG": str(tmp_path / name)}
    if hang:
        env["GQ_HANG"] = "1"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, name, str(count), task,
                             str(tmp_path / f"data-{name}"), str(stop_timeout)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line + proc.stderr.read()
    return proc


def runs(tmp_path, what="ran"):
    """[(pid, attempt, label)] of the lines the tasks wrote."""
    path = tmp_path / "ran.txt"
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(int(pid), int(attempt), label) for pid, attempt, kind, label in lines
            if kind == what]


def finish(*procs):
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert "DONE" in out, err


def test_two_processes_run_a_thousand_tasks_exactly_once(url, tmp_path):
    a = start(url, tmp_path, "a", 500)
    b = start(url, tmp_path, "b", 500)
    wait_until(lambda: len(runs(tmp_path)) >= 1000, timeout=30, what="1000 tasks to run")
    finish(a, b)
    done = runs(tmp_path)
    counts = Counter(label for _, _, label in done)
    assert sorted(counts) == sorted(f"{p}-{i}" for p in "ab" for i in range(500))
    assert set(counts.values()) == {1}
    assert {pid for pid, _, _ in done} == {a.pid, b.pid}  # the work was shared


def test_kill_9_while_holding_claims_another_process_runs_them_after_the_lease(url, tmp_path):
    a = start(url, tmp_path, "a", 5, task="hang", hang=True)
    wait_until(lambda: len(runs(tmp_path, "started")) == 5, timeout=10, what="5 claims held")
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=10)
    b = start(url, tmp_path, "b")
    wait_until(lambda: len(runs(tmp_path)) == 5, timeout=15, what="the dead process's tasks")
    finish(b)
    done = runs(tmp_path)
    assert sorted(label for _, _, label in done) == [f"a-{i}" for i in range(5)]
    # the attempt the kill cut short counts: the second run is attempt 2
    assert {(pid, attempt) for pid, attempt, _ in done} == {(b.pid, 2)}


def test_a_graceful_stop_hands_its_tasks_back_without_counting_the_attempt(url, tmp_path):
    a = start(url, tmp_path, "a", 5, task="hang", hang=True, stop_timeout=0.2)
    wait_until(lambda: len(runs(tmp_path, "started")) == 5, timeout=10, what="5 claims held")
    finish(a)  # SIGTERM: the running attempts are interrupted past the drain timeout
    b = start(url, tmp_path, "b")
    wait_until(lambda: len(runs(tmp_path)) == 5, timeout=10, what="the handed-back tasks")
    finish(b)
    assert {(pid, attempt) for pid, attempt, _ in runs(tmp_path)} == {(b.pid, 1)}


def test_a_stalled_process_loses_its_leases_says_so_and_does_not_undo_the_new_owner(url,
                                                                                  tmp_path):
    a = start(url, tmp_path, "a", 2, task="hang", hang=True, stop_timeout=0.2)
    wait_until(lambda: len(runs(tmp_path, "started")) == 2, timeout=10, what="2 claims held")
    os.kill(a.pid, signal.SIGSTOP)      # a stall past the lease (a long GC pause, a VM freeze)
    b = start(url, tmp_path, "b")
    wait_until(lambda: len(runs(tmp_path)) == 2, timeout=15, what="the other process")
    os.kill(a.pid, signal.SIGCONT)
    log = tmp_path / "a"
    wait_until(lambda: log.read_text().count("ran out while this process held it") == 2,
               timeout=10, what="the stalled process to notice")
    finish(a, b)  # a's interrupted attempts must not put the finished tasks back
    assert "this outcome is not recorded" in log.read_text()
    assert sorted(label for _, _, label in runs(tmp_path)) == ["a-0", "a-1"]
    probe = open_log(url)
    try:
        assert probe.pending() == []
    finally:
        probe.close()


def test_a_task_that_used_its_retries_on_crashes_is_buried(url, tmp_path):
    a = start(url, tmp_path, "a", 1, task="hang_once", hang=True)
    wait_until(lambda: len(runs(tmp_path, "started")) == 1, timeout=10, what="the claim")
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=10)
    with greenqueue.Runtime(backend=url, lease=1.0) as rt:
        wait_until(lambda: rt.dead(), timeout=15, what="the task to be buried")
        (dead,) = rt.dead()
        assert dead.name == "tests.shared_tasks:hang_once"
        assert dead.error["message"] == "process died during attempt 1"
    assert runs(tmp_path) == []


def test_enqueue_raises_backend_unavailable_when_the_server_goes_away(url, tmp_path):
    kind = "redis" if url.startswith("redis") else "postgres"
    proxy = Proxy(("127.0.0.1", 6379 if kind == "redis" else 5432)).start()
    via = url.replace(":6379/", f":{proxy.port}/").replace(":5432/", f":{proxy.port}/")
    os.environ["GQ_RAN"] = str(tmp_path / "ran.txt")
    try:
        with greenqueue.Runtime(backend=via, lease=1.0) as rt:
            shared_tasks.work.enqueue("before")
            proxy.stop()
            with pytest.raises(BackendUnavailable):
                shared_tasks.work.enqueue("lost")
            proxy.start()
            shared_tasks.work.enqueue("after")  # reconnects
            wait_until(lambda: len(runs(tmp_path)) == 2, timeout=15,
                       what="the tasks enqueued before and after the outage")
            assert sorted(label for _, _, label in runs(tmp_path)) == ["after", "before"]
            assert rt.stats()["enqueued"] == 2
    finally:
        del os.environ["GQ_RAN"]
        proxy.stop()


def test_start_refuses_an_unreachable_server_or_a_malformed_url(url):
    unreachable = url.replace(":6379/", ":1/").replace(":5432/", ":1/")
    with pytest.raises(ConfigError, match="cannot reach"):
        greenqueue.Runtime(backend=unreachable).start()
    assert greenqueue.current_runtime() is None
    with pytest.raises(ConfigError, match="unknown backend"):
        greenqueue.Runtime(backend="mysql://x")
    with pytest.raises(ConfigError):
        greenqueue.Runtime(backend=url.split("://")[0] + "://127.0.0.1:notaport/0").start()


@pytest.mark.parametrize("scheme,package", [("redis", "redis"), ("postgresql", "psycopg")])
def test_a_missing_package_is_named_with_its_extra(tmp_path, scheme, package):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == {package!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import greenqueue
try:
    greenqueue.Runtime(backend="{scheme}://127.0.0.1/0")
except greenqueue.ConfigError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    extra = "redis" if scheme == "redis" else "postgres"
    assert f"pip install 'greenqueue[{extra}]'" in proc.stdout, proc.stdout + proc.stderr


def test_redis_with_aof_keeps_every_acknowledged_task_through_a_kill_9_of_the_server(tmp_path):
    """The README's advice (``appendonly yes``) holds: what ``enqueue`` acknowledged, and the
    acknowledgements of finished tasks, are there after the server is killed and restarted."""
    backends.redis_url()  # skips (or fails in CI) without redis-py
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)]

    def server():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: _answers(port), timeout=10, what="redis-server to start")
        return proc
    url = f"redis://127.0.0.1:{port}/0"
    redis_server = server()
    try:
        with greenqueue.Runtime(backend=url, path=str(tmp_path / "data")) as rt:
            rt.fetcher.stop()  # keep them pending
            later = {shared_tasks.work.enqueue(f"later-{i}", delay=3600) for i in range(100)}
            now = [shared_tasks.work.enqueue(f"now-{i}") for i in range(100)]
            for task_id in now[:50]:
                rt.log.remove(task_id)  # as if finished here
            rt.log.sync()
            redis_server.kill()
            redis_server.wait(timeout=10)
        redis_server = server()
        log = open_log(url)
        try:
            assert {env.id for env in log.pending()} == later | set(now[50:])
        finally:
            log.close()
    finally:
        redis_server.kill()
        redis_server.wait(timeout=10)


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
