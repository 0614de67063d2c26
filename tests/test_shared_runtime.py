"""One runtime on a shared backend behaves as on the disk log: priority, delay, retries, the
dead set. (Several processes: tests/test_shared_backends.py.)"""
import time

import gevent
import pytest

import greenqueue
from greenqueue.log.shared import KeyHeld
from greenqueue.log import open_log
from tests import backends, tasks
from tests.helpers import wait_until


@pytest.fixture(params=["redis", "postgres"])
def shared_rt(request):
    url = backends.shared_url(request.param)
    runtimes = []

    def make(**settings):
        runtime = greenqueue.Runtime(backend=url, **settings).start()
        runtimes.append(runtime)
        return runtime
    yield make
    tasks.gate.set()
    for runtime in runtimes:
        runtime.stop(timeout=1)
    backends.drop(url)


def test_claims_follow_priority_then_enqueue_order(shared_rt):
    rt = shared_rt(concurrency=1)
    tasks.hold.enqueue("hold")
    wait_until(lambda: tasks.seen == ["hold"], what="the worker to be held")
    tasks.record.enqueue(1)
    tasks.urgent.enqueue(2)
    tasks.record.enqueue(3)
    assert rt.queue.ready == 0  # enqueue went to the server, not to the local queue
    tasks.gate.set()
    wait_until(lambda: len(tasks.seen) == 4, timeout=5, what="all four tasks")
    assert tasks.seen == ["hold", 2, 1, 3]


def test_delayed_tasks_wait_on_the_server(shared_rt):
    rt = shared_rt()
    task_id = tasks.record.enqueue("later", delay=0.3)
    assert [env.id for env in rt.log.pending()] == [task_id]
    wait_until(lambda: tasks.seen == ["later"], timeout=5, what="the delayed task")
    wait_until(lambda: rt.log.pending() == [], what="its acknowledgement")


def test_retries_go_through_the_server_and_count_attempts(shared_rt):
    shared_rt()
    tasks.fails_until.enqueue("k", 3)
    wait_until(lambda: len(tasks.infos) == 3, timeout=5, what="three attempts")
    assert [attempt for _, attempt, _, _ in tasks.infos] == [1, 2, 3]


def test_dead_set_retry_and_purge(shared_rt):
    rt = shared_rt()
    dead_id = tasks.fails_while.enqueue("d")
    tasks.boom.enqueue(1)
    wait_until(lambda: len(rt.dead()) == 2, timeout=5, what="two dead tasks")
    assert rt.retry_dead(dead_id) == dead_id
    wait_until(lambda: tasks.seen == ["d"], timeout=5, what="the revived task")
    assert [d.name for d in rt.dead()] == ["tests.tasks:boom"]
    assert rt.purge_dead() == 1
    assert rt.dead() == [] and rt.stats()["dead"] == 0


def test_a_unique_key_is_released_when_another_process_ran_the_task(shared_rt):
    rt = shared_rt()
    rt.fetcher.stop()  # this process only enqueues; "another process" below runs the task
    first = tasks.record.enqueue(1, unique_key="k")
    assert tasks.record.enqueue(2, unique_key="k") == first  # pending: deduplicated
    other = open_log(rt.backend)
    try:
        ((env, _),) = other.claim(10)
        assert env.id == first
        other.remove(env.id)
        other.sync()
    finally:
        other.close()
    assert tasks.record.enqueue(3, unique_key="k") != first



@greenqueue.task(unique=True, unique_for=0.3)
def briefly_unique(n):
    tasks.seen.append(n)


def test_a_unique_key_holds_for_every_runtime_sharing_the_server(shared_rt):
    rt = shared_rt()
    rt.fetcher.stop()  # the tasks stay pending
    first = tasks.record.enqueue(1, unique_key="k")
    other = open_log(rt.backend)  # another host enqueueing through the same server
    try:
        env = greenqueue.Envelope("someone-elses", "tests.tasks:record", b"", 0, 0.0, 0, 0.0)
        other.hold_key(env.id, "k", None)
        with pytest.raises(KeyHeld) as held:
            other.append(env)
        assert held.value.holder == first
        other.hold_key("fresh", "k2", None)
        other.append(greenqueue.Envelope("fresh", env.name, b"", 0, 0.0, 0, 0.0))
    finally:
        other.close()
    assert tasks.record.enqueue(2, unique_key="k2") == "fresh"
    assert tasks.record.enqueue(3, unique_key="k") == first
    assert sorted(e.id for e in rt.log.pending()) == sorted([first, "fresh"])


def test_a_unique_key_goes_with_its_task_done_or_dead(shared_rt):
    rt = shared_rt()
    done = tasks.record.enqueue("a", unique_key="k")
    wait_until(lambda: tasks.seen == ["a"], timeout=5, what="the task")
    wait_until(lambda: rt.log.pending() == [], what="its acknowledgement")
    assert tasks.record.enqueue("b", unique_key="k") != done
    wait_until(lambda: tasks.seen == ["a", "b"], timeout=5, what="the second task")
    dead = tasks.boom.enqueue(1, unique_key="d")
    wait_until(lambda: len(rt.dead()) == 1, timeout=5, what="the dead task")
    assert tasks.boom.enqueue(2, unique_key="d") != dead


def test_unique_for_bounds_how_long_the_server_holds_a_key(shared_rt):
    shared_rt().fetcher.stop()
    first = briefly_unique.enqueue(1)
    assert briefly_unique.enqueue(1) == first
    assert briefly_unique.enqueue(2) != first  # other arguments, other key
    gevent.sleep(0.4)
    assert briefly_unique.enqueue(1) != first  # held 0.3 s, though still pending


def test_the_dashboards_delayed_tasks_are_the_clusters(shared_rt):
    from greenqueue.dashboard.data import answer_delayed
    rt = shared_rt()
    later = tasks.record.enqueue("later", delay=300)
    other = open_log(rt.backend)  # another host's tasks, on the same server
    try:
        now = time.time()
        for task_id, delay in (("sooner", 100), ("latest", 900)):
            other.append(greenqueue.Envelope(task_id, "tests.tasks:record", b"", 0,
                                             now + delay, 0, now))
    finally:
        other.close()
    sooner = "sooner"
    answer = answer_delayed({"limit": 2})
    assert answer["total"] == 3 and answer["shared"]
    assert [d["id"] for d in answer["delayed"]] == [sooner, later]
