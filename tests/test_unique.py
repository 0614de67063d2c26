"""Unique tasks: one task per key while it waits, retries or runs; across restarts, adoption
and processes sharing a data directory or a shared backend."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import greenqueue
from greenqueue.testing import TestRuntime
from tests import backends
from tests import feature_tasks as ft
from tests import tasks
from tests.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def markers(data_dir):
    directory = os.path.join(data_dir, "unique")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_a_held_key_returns_the_existing_id_and_logs_nothing(greenqueue_runtime):
    first = ft.welcome.enqueue("a@example.com", unique_key="welcome:a")
    again = ft.welcome.enqueue("a@example.com", unique_key="welcome:a", delay=5)
    other = ft.welcome.enqueue("b@example.com", unique_key="welcome:b")
    assert again == first != other
    assert greenqueue_runtime.stats()["enqueued"] == 2
    greenqueue_runtime.drain()
    assert tasks.seen == [("welcome", "a@example.com"), ("welcome", "b@example.com")]
    assert ft.welcome.enqueue("a@example.com", unique_key="welcome:a") != first  # released


def test_unique_tasks_are_keyed_by_their_arguments(greenqueue_runtime):
    one = ft.refresh.enqueue(1)
    assert ft.refresh.enqueue(1) == one
    assert ft.refresh.enqueue(2) != one
    assert ft.Rebuild.enqueue(7) == ft.Rebuild.enqueue(7)
    assert ft.refresh.enqueue(1, unique_key="custom") != one  # an explicit key wins
    greenqueue_runtime.drain()
    assert sorted(tasks.seen) == [("rebuild", 7), ("refresh", 1), ("refresh", 1),
                                  ("refresh", 2)]


def test_unique_for_bounds_how_long_a_key_holds(greenqueue_runtime):
    first = ft.refresh_briefly.enqueue("acme", delay=3600)
    greenqueue_runtime.clock.advance(59)
    assert ft.refresh_briefly.enqueue("acme") == first
    greenqueue_runtime.clock.advance(2)
    assert ft.refresh_briefly.enqueue("acme") != first


def test_a_retrying_task_keeps_its_key_and_a_dead_one_releases_it(greenqueue_runtime):
    first = ft.flaky.enqueue("k", unique_key="flaky")
    with pytest.raises(ConnectionError):
        greenqueue_runtime.drain()
    assert ft.flaky.enqueue("k", unique_key="flaky") == first  # waiting for its retry
    boom = tasks.boom.enqueue(1, unique_key="boom")
    greenqueue_runtime.drain(raise_errors=False)
    assert [d.id for d in greenqueue_runtime.dead()] == [boom]
    assert tasks.boom.enqueue(1, unique_key="boom") != boom


def test_unique_key_and_after_are_reserved():
    with pytest.raises(greenqueue.TaskError, match="unique_key"):
        @greenqueue.task
        def takes_a_key(unique_key):
            pass
    with pytest.raises(greenqueue.TaskError, match="after"):
        class Later(greenqueue.Task):
            def perform(self, after):
                pass
    with pytest.raises(greenqueue.TaskError, match="unique_for"):
        greenqueue.task(unique=True, unique_for=-1)(lambda: None)


def test_keys_hold_across_a_restart_and_go_when_the_task_ends(tmp_path):
    data = tmp_path / "data"
    with greenqueue.Runtime(path=data) as runtime:
        first = ft.welcome.enqueue("a@example.com", unique_key="invoice:42", delay=3600)
    assert len(markers(data)) == 1
    with TestRuntime(backend="disk", path=data) as runtime:
        assert ft.welcome.enqueue("a@example.com", unique_key="invoice:42") == first
        runtime.drain(delayed=True)
        assert tasks.seen == [("welcome", "a@example.com")]
        assert markers(data) == []
        assert ft.welcome.enqueue("a@example.com", unique_key="invoice:42") != first


def test_a_dead_process_keys_pass_to_the_adopter(tmp_path):
    data = tmp_path / "data"
    script = textwrap.dedent(f"""
        import os, greenqueue
        from tests import feature_tasks as ft
        rt = greenqueue.Runtime(path={str(data)!r}).start()
        print(ft.welcome.enqueue("x", unique_key="invoice:7", delay=3600), flush=True)
        os._exit(0)  # no stop: its segment is left unlocked, as after kill -9
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    task_id = out.stdout.strip()
    assert task_id, out.stderr
    with TestRuntime(backend="disk", path=data) as runtime:
        assert ft.welcome.enqueue("x", unique_key="invoice:7") == task_id
        (name,) = markers(data)
        with open(os.path.join(data, "unique", name)) as f:
            assert f.read().split("\n")[1] == runtime.log.chain  # re-signed by the adopter
        runtime.drain(delayed=True)
        assert markers(data) == []


def test_a_marker_whose_owner_left_nothing_is_stale(tmp_path):
    data = tmp_path / "data"
    with greenqueue.Runtime(path=data):
        first = ft.welcome.enqueue("a", unique_key="k", delay=3600)
        (name,) = markers(data)
        path = os.path.join(data, "unique", name)
        with open(path) as f:
            body = f.read().split("\n")
        body[:2] = ["someone-elses-id", "0123456789abcdef"]  # a chain with no segment file
        with open(path, "w") as f:
            f.write("\n".join(body))
    with greenqueue.Runtime(path=data):
        assert ft.welcome.enqueue("b", unique_key="k") not in (first, "someone-elses-id")


def test_two_processes_racing_on_one_key_run_the_task_once(tmp_path):
    data = tmp_path / "data"
    race(str(data), tmp_path / "work", 1000)
    assert markers(data) == []


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_two_hosts_racing_on_one_key_of_a_shared_backend_run_the_task_once(tmp_path, kind):
    url = backends.shared_url(kind)
    try:
        race(url, tmp_path / "work", 300)
    finally:
        backends.drop(url)


def race(data, work, n):
    """Two processes enqueue one unique key ``n`` times each at once: one task id, one run."""
    (work / "done").mkdir(parents=True)
    racers = [subprocess.Popen([sys.executable, "-m", "tests.unique_race", data,
                                str(work), str(n), name], cwd=ROOT)
              for name in ("a", "b")]
    try:
        wait_until(lambda: all((work / f"ready-{n}").exists() for n in "ab"), timeout=60,
                   what="both racers to start")
        (work / "go").touch()
        assert [p.wait(timeout=90) for p in racers] == [0, 0]
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
    got = [json.loads((work / "done" / n).read_text()) for n in "ab"]
    assert got[0] == got[1] and len(got[0]) == 1  # 2 n enqueues, one task id
    assert len((work / "runs").read_text().splitlines()) == 1
