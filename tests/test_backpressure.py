"""Backpressure: enqueue blocks above the high-water mark, PushTimeout, release on drain."""
import gevent
import pytest

import greenqueue
from greenqueue.log.memory import MemoryLog
from tests import tasks
from tests.helpers import wait_until


def full_runtime(make_runtime, push_timeout):
    """One worker held busy, and room for 10 ready tasks (released again at 5), all taken."""
    runtime = make_runtime(concurrency=1, backpressure=True, high_water_mark=10,
                           low_water_mark=5, push_timeout=push_timeout)
    tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1, what="hold to start")
    for n in range(10):
        tasks.record.enqueue(n)
    assert runtime.stats()["ready"] == 10
    return runtime


@pytest.fixture
def tight(make_runtime):
    return full_runtime(make_runtime, push_timeout=0.1)


def test_enqueue_above_the_high_water_mark_raises_push_timeout(tight):
    with pytest.raises(greenqueue.PushTimeout, match="10 tasks ready"):
        tasks.record.enqueue("one too many")
    assert tight.stats()["ready"] == 10 and tight.stats()["enqueued"] == 11
    assert issubclass(greenqueue.PushTimeout, greenqueue.GreenqueueError)


def test_a_blocked_enqueue_resumes_when_workers_drain_to_the_low_water_mark(make_runtime):
    tight = full_runtime(make_runtime, push_timeout=5)
    ready_when_released = []

    def producer():
        ready_when_released.append("trying")
        tasks.record.enqueue("blocked")
        ready_when_released.append(tight.stats()["ready"])

    blocked = gevent.spawn(producer)
    gevent.sleep(0)  # the hub runs the producer up to its wait for room, then comes back
    assert ready_when_released == ["trying"] and not blocked.dead
    tasks.gate.set()
    blocked.join(timeout=2)
    assert blocked.successful(), blocked.exception
    assert ready_when_released[1] <= 5
    assert tight.join(timeout=2)
    assert tasks.seen[-1] == "blocked" and len(tasks.seen) == 12


def test_delayed_tasks_are_not_held_back(tight):
    tid = tasks.record.enqueue("later", delay=30)
    assert isinstance(tid, str) and tight.stats()["delayed"] == 1


def test_backpressure_is_off_by_default(make_runtime):
    runtime = make_runtime(concurrency=1, high_water_mark=2, low_water_mark=1)
    tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1)
    for n in range(20):
        tasks.record.enqueue(n)
    assert runtime.stats()["ready"] == 20


def test_tasks_coming_due_count_towards_the_high_water_mark(make_runtime):
    runtime = make_runtime(concurrency=1, backpressure=True, high_water_mark=5,
                           low_water_mark=2, push_timeout=0.05)
    tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1)
    for n in range(8):
        tasks.record.enqueue(n, delay=0.01)  # delayed tasks are never held back...
    wait_until(lambda: runtime.stats()["ready"] == 8, what="the delayed tasks to come due")
    with pytest.raises(greenqueue.PushTimeout):  # ...but once due they fill the queue
        tasks.record.enqueue("one too many")


def test_replayed_tasks_count_towards_the_high_water_mark(make_runtime):
    log = MemoryLog()
    first = make_runtime(backend=log, concurrency=1)
    tasks.hold.enqueue()
    wait_until(lambda: first.stats()["in_flight"] == 1)
    for n in range(8):
        tasks.record.enqueue(n)
    first.stop(timeout=0.01)
    tasks.reset()
    second = make_runtime(backend=log, concurrency=1, backpressure=True, high_water_mark=5,
                          low_water_mark=2, push_timeout=0.05)
    wait_until(lambda: second.stats()["in_flight"] == 1)  # the replayed hold holds again
    assert second.stats()["ready"] == 8
    with pytest.raises(greenqueue.PushTimeout):
        tasks.record.enqueue("one too many")
