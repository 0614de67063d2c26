"""The ready queue on its own: priority, then FIFO, for any mix of pushes."""
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from greenqueue.envelope import Envelope
from greenqueue.queue import TaskQueue

pushes = st.lists(st.tuples(st.integers(-3, 3), st.sampled_from(["now", "overdue", "later"])),
                  max_size=60)


@settings(max_examples=200, deadline=None)
@given(pushes)
def test_pop_order_is_priority_then_fifo(items):
    queue = TaskQueue()
    now = time.time()
    due = {"now": 0.0, "overdue": now - 5, "later": now + 3600}
    for n, (priority, when) in enumerate(items):
        queue.push(Envelope(str(n), "t:t", b"", priority=priority, publish_at=due[when]))
    popped = []
    while (env := queue.pop()) is not None:
        popped.append(int(env.id))
    expected = sorted((n for n, (_, when) in enumerate(items) if when != "later"),
                      key=lambda n: -items[n][0])  # sorted() is stable: FIFO within a level
    assert popped == expected
    assert queue.ready == 0
    assert len(queue.delayed) == sum(1 for _, when in items if when == "later")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-2, 2), min_size=1, max_size=40), st.data())
def test_interleaved_push_and_pop_keep_the_order(priorities, data):
    queue = TaskQueue()
    waiting = []
    for n, priority in enumerate(priorities):
        queue.push(Envelope(str(n), "t:t", b"", priority=priority))
        waiting.append((-priority, n))
        if data.draw(st.booleans()):
            best = min(waiting)
            waiting.remove(best)
            assert int(queue.pop().id) == best[1]
    assert [int(queue.pop().id) for _ in waiting] == [n for _, n in sorted(waiting)]
    assert queue.pop() is None
