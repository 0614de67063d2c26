"""What a task sees of its surroundings: log context, greenqueue.current(), middleware."""
import logging

import gevent
import pytest

import greenqueue
from tests import tasks
from tests.helpers import wait_until


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
        self.addFilter(greenqueue.RequestIdFilter())

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    handler = Collect()
    logger = logging.getLogger("tests.tasks")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def in_greenlet(fn):
    """Run ``fn`` in a fresh greenlet: a context set there ends with it."""
    return gevent.spawn(fn).get(timeout=2)


# -- log context ------------------------------------------------------------------------------

def test_request_id_reaches_a_log_record_inside_the_task(rt, records):
    def request():
        greenqueue.log_context(request_id="req-42")
        return tasks.log_something.enqueue("inside")

    tid = in_greenlet(request)
    assert rt.join(timeout=2)
    (record,) = records
    assert record.getMessage() == "inside"
    assert record.request_id == "req-42" and record.task_id == tid
    formatter = logging.Formatter("%(request_id)s %(task_id)s %(message)s")
    assert formatter.format(record) == f"req-42 {tid} inside"


def test_each_request_keeps_its_own_id(rt, records):
    def request(n):
        def run():
            greenqueue.log_context(request_id=f"req-{n}")
            gevent.sleep(0)  # interleave the requests
            tasks.log_something.enqueue(f"from {n}")
        return run

    gevent.joinall([gevent.spawn(request(n)) for n in range(5)], raise_error=True)
    assert rt.join(timeout=2)
    assert sorted((r.getMessage(), r.request_id) for r in records) == [
        (f"from {n}", f"req-{n}") for n in range(5)]


def test_any_fields_travel_and_merge(rt, records):
    def request():
        greenqueue.log_context(request_id="r1")
        greenqueue.log_context({"user": "u7"}, tenant="acme")
        assert dict(greenqueue.log_context()) == {"request_id": "r1", "user": "u7",
                                                  "tenant": "acme"}
        tasks.log_something.enqueue("fields")

    in_greenlet(request)
    assert rt.join(timeout=2)
    (record,) = records
    assert (record.request_id, record.user, record.tenant) == ("r1", "u7", "acme")


def test_log_context_as_a_context_manager_restores_the_previous_fields():
    def request():
        greenqueue.log_context(request_id="outer")
        with greenqueue.log_context(request_id="inner", extra=1) as fields:
            assert fields == {"request_id": "inner", "extra": 1}
            assert greenqueue.log_context()["request_id"] == "inner"
        assert dict(greenqueue.log_context()) == {"request_id": "outer"}
        assert list(greenqueue.log_context()) == ["request_id"]
        return list(greenqueue.log_context().keys())

    assert in_greenlet(request) == ["request_id"]
    assert dict(greenqueue.log_context()) == {}  # nothing leaked into this greenlet


def test_records_outside_requests_and_tasks_get_the_default():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert greenqueue.RequestIdFilter().filter(record)
    assert (record.request_id, record.task_id) == ("-", "-")
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    greenqueue.RequestIdFilter(default="none").filter(other)
    assert other.request_id == "none"


def test_a_record_field_set_explicitly_wins(rt, records):
    def request():
        with greenqueue.log_context(request_id="ctx"):
            logging.getLogger("tests.tasks").warning("explicit", extra={"request_id": "mine"})

    in_greenlet(request)
    assert records[0].request_id == "mine"


def test_a_task_without_context_logs_the_default_request_id(rt, records):
    tid = tasks.log_something.enqueue("plain")
    assert rt.join(timeout=2)
    assert (records[0].request_id, records[0].task_id) == ("-", tid)


def test_the_context_does_not_leak_from_one_task_to_the_next(make_runtime, records):
    runtime = make_runtime(concurrency=1)

    def request():
        with greenqueue.log_context(request_id="first"):
            tasks.log_something.enqueue("one")
        tasks.log_something.enqueue("two")

    in_greenlet(request)
    assert runtime.join(timeout=2)
    assert [r.request_id for r in records] == ["first", "-"]


# -- greenqueue.current() ---------------------------------------------------------------------

def test_current_is_none_outside_a_task():
    assert greenqueue.current() is None


def test_current_reports_attempt_task_id_and_retries(rt):
    tid = tasks.fails_until.enqueue("k", succeed_on=2)
    wait_until(lambda: rt.stats()["processed"] == 1)
    assert tasks.infos == [(tid, 1, 0, "tests.tasks:fails_until"),
                           (tid, 2, 1, "tests.tasks:fails_until")]
    assert greenqueue.current() is None


def test_current_in_a_task_class(rt):
    seen = []

    class Introspect(greenqueue.Task):
        def perform(self):
            info = greenqueue.current()
            seen.append((info.task_id, info.attempt, info.retries, info.enqueued_at > 0))
            assert repr(info).startswith("<TaskInfo ")

    tid = Introspect.enqueue()
    assert rt.join(timeout=2)
    assert seen == [(tid, 1, 0, True)]


# -- middleware -------------------------------------------------------------------------------

class Trace:
    def __init__(self, name, events):
        self.name = name
        self.events = events

    def on_enqueue(self, envelope, call_next):
        self.events.append((self.name, "enqueue", "before", envelope.name))
        result = call_next()
        self.events.append((self.name, "enqueue", "after", envelope.name))
        return result

    def on_perform(self, envelope, call_next):
        self.events.append((self.name, "perform", "before", greenqueue.current().task_id
                            == envelope.id))
        result = call_next()
        self.events.append((self.name, "perform", "after", envelope.name))
        return result


class PerformOnly:
    def __init__(self, events):
        self.events = events

    def on_perform(self, envelope, call_next):
        self.events.append(("perform-only", envelope.attempt))
        return call_next()


def test_middleware_runs_in_the_order_added_first_outermost(rt):
    events = []
    rt.add_middleware(Trace("a", events))
    rt.add_middleware(Trace("b", events))
    rt.add_middleware(PerformOnly(events))
    name = "tests.tasks:record"
    tasks.record.enqueue("x")
    assert events == [("a", "enqueue", "before", name), ("b", "enqueue", "before", name),
                      ("b", "enqueue", "after", name), ("a", "enqueue", "after", name)]
    del events[:]
    assert rt.join(timeout=2)
    assert events == [("a", "perform", "before", True), ("b", "perform", "before", True),
                      ("perform-only", 0),
                      ("b", "perform", "after", name), ("a", "perform", "after", name)]
    assert tasks.seen == ["x"]


def test_on_enqueue_middleware_can_drop_a_task(rt):
    class Drop:
        def on_enqueue(self, envelope, call_next):
            return None

    rt.add_middleware(Drop())
    tasks.record.enqueue("dropped")
    assert rt.join(timeout=2)
    assert tasks.seen == [] and rt.stats()["enqueued"] == 0


def test_an_exception_in_on_perform_is_a_task_failure(rt):
    class Refuse:
        def on_perform(self, envelope, call_next):
            raise PermissionError("not today")

    rt.add_middleware(Refuse())
    tasks.boom.enqueue(1)  # max_retries=0
    wait_until(lambda: rt.dead())
    assert rt.dead()[0].error["type"] == "PermissionError"


def test_middleware_without_hooks_is_refused(rt):
    with pytest.raises(greenqueue.ConfigError):
        rt.add_middleware(object())


def test_middleware_added_before_start_applies(make_runtime):
    events = []
    runtime = greenqueue.Runtime(backend="memory")
    runtime.add_middleware(Trace("early", events))
    runtime.start()
    try:
        tasks.record.enqueue(1)
        assert runtime.join(timeout=2)
    finally:
        runtime.stop(timeout=1)
    assert [e[:3] for e in events] == [("early", "enqueue", "before"),
                                       ("early", "enqueue", "after"),
                                       ("early", "perform", "before"),
                                       ("early", "perform", "after")]


def test_a_task_enqueued_by_a_task_keeps_the_request_id(rt, records):
    @greenqueue.task
    def parent():
        tasks.log_something.enqueue("from the child")

    def request():
        greenqueue.log_context(request_id="chain")
        parent.enqueue()

    in_greenlet(request)
    wait_until(lambda: records)
    assert rt.join(timeout=2)
    assert [(r.getMessage(), r.request_id) for r in records] == [("from the child", "chain")]


def test_an_error_in_on_enqueue_reaches_the_caller_and_nothing_is_queued(rt):
    class Refuse:
        def on_enqueue(self, envelope, call_next):
            raise PermissionError("quota")

    rt.add_middleware(Refuse())
    with pytest.raises(PermissionError, match="quota"):
        tasks.record.enqueue(1)
    assert rt.join(timeout=1) and tasks.seen == [] and rt.stats()["enqueued"] == 0
