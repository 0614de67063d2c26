"""Defining tasks and enqueueing them: ids, ordering, delays, wrap(), argument errors."""
import datetime as dt
import os
import time

import gevent
from gevent.lock import Semaphore
import pytest

import greenqueue
from greenqueue.log.memory import MemoryLog
from tests import tasks
from tests.helpers import wait_until


def occupy_single_worker(runtime):
    """Start ``hold`` on the only worker, so later enqueues pile up in the ready queue."""
    tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1, what="hold to start")


# -- plain calls and definitions ----------------------------------------------------------------

def test_plain_call_runs_synchronously_and_returns_the_result():
    assert tasks.add(2, 3) == 5
    tasks.record("now")
    assert tasks.seen == ["now"]
    assert tasks.add.__name__ == "add" and tasks.add.__wrapped__(1, 1) == 2
    assert repr(tasks.add) == "<greenqueue task tests.tasks:add>"


def test_task_class_perform_can_be_called_directly():
    tasks.SayHello().perform("you", punctuation="?")
    assert tasks.seen == ["Hello, you?"]


def test_task_decorator_bare_and_with_options():
    def plain(x):
        return x

    made = greenqueue.task(plain)
    assert (made.priority, made.max_retries, made.timeout) == (0, 5, None)
    configured = greenqueue.task(priority=3, max_retries=1, timeout=2.5)(plain)
    assert (configured.priority, configured.max_retries, configured.timeout) == (3, 1, 2.5)
    assert configured(9) == 9


@pytest.mark.parametrize("word", ["delay", "delay_until", "priority", "durable"])
def test_reserved_parameter_names_are_refused_for_functions(word):
    namespace = {}
    exec(f"def positional(x, {word}=None): pass\n"
         f"def keyword_only(x, *, {word}): pass", namespace)
    for fn in (namespace["positional"], namespace["keyword_only"]):
        with pytest.raises(greenqueue.TaskError, match=repr(word)):
            greenqueue.task(fn)
        with pytest.raises(greenqueue.TaskError, match=repr(word)):
            greenqueue.task(priority=1)(fn)


@pytest.mark.parametrize("word", ["delay", "delay_until", "priority", "durable"])
def test_reserved_parameter_names_are_refused_for_task_classes(word):
    namespace = {}
    exec(f"def perform(self, x, {word}=None): pass", namespace)
    with pytest.raises(greenqueue.TaskError, match=repr(word)):
        type("Clashing", (greenqueue.Task,), {"perform": namespace["perform"]})


def test_var_keyword_parameters_do_not_clash():
    @greenqueue.task
    def flexible(*args, **kwargs):
        pass
    assert flexible(1, delay=2) is None


@pytest.mark.parametrize("options", [
    {"max_retries": -1}, {"max_retries": 1.5}, {"max_retries": True},
    {"timeout": 0}, {"timeout": -2}, {"timeout": "5"}, {"timeout": True},
    {"priority": "high"}, {"priority": 1.0}, {"priority": 2 ** 31},
])
def test_invalid_task_options_are_refused_at_definition(options):
    with pytest.raises(greenqueue.TaskError):
        greenqueue.task(**options)(lambda: None)
    with pytest.raises(greenqueue.TaskError):
        type("Bad", (greenqueue.Task,), {**options, "perform": lambda self: None})


def test_task_decorator_refuses_classes_and_non_callables():
    with pytest.raises(greenqueue.TaskError, match="subclass greenqueue.Task"):
        greenqueue.task(tasks.Service)
    with pytest.raises(greenqueue.TaskError):
        greenqueue.task(42)


def test_task_base_class_cannot_be_enqueued_and_perform_must_be_implemented(rt):
    with pytest.raises(greenqueue.TaskError):
        greenqueue.Task.enqueue()

    class Lazy(greenqueue.Task):
        pass
    with pytest.raises(NotImplementedError, match="Lazy"):
        Lazy().perform()


# -- enqueue --------------------------------------------------------------------------------

def test_enqueue_returns_a_unique_id_at_once_and_runs_in_another_greenlet(rt):
    caller = gevent.getcurrent()
    ran_in = []

    @greenqueue.task
    def where():
        ran_in.append(gevent.getcurrent())

    ids = [tasks.record.enqueue(i) for i in range(3)]
    ids.append(where.enqueue())
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 4
    assert tasks.seen == [] and ran_in == []  # nothing ran inside the caller
    assert rt.join(timeout=2)
    assert tasks.seen == [0, 1, 2]
    assert ran_in and ran_in[0] is not caller


def test_enqueue_passes_positional_and_keyword_arguments(rt):
    tasks.SayHello.enqueue("World")
    tasks.SayHello.enqueue(name="Moon", punctuation="?")
    assert rt.join()  # no timeout: returns once drained (pytest-timeout guards the test)
    assert tasks.seen == ["Hello, World!", "Hello, Moon?"]


def test_priority_first_then_fifo(make_runtime):
    runtime = make_runtime(concurrency=1)
    occupy_single_worker(runtime)
    tasks.record.enqueue("low-1")
    tasks.record.enqueue("high-1", priority=10)
    tasks.record.enqueue("below-1", priority=-3)
    tasks.urgent.enqueue("urgent-default-5")              # the task's own priority
    tasks.record.enqueue("low-2", priority=0)
    tasks.Important.enqueue("class-priority-7")
    tasks.record.enqueue("high-2", priority=10)
    tasks.urgent.enqueue("urgent-overridden-0", priority=0)
    tasks.record.enqueue("below-2", priority=-3)
    assert runtime.stats()["ready"] == 9
    tasks.gate.set()
    assert runtime.join(timeout=2)
    assert tasks.seen == ["hold", "high-1", "high-2", "class-priority-7", "urgent-default-5",
                          "low-1", "low-2", "urgent-overridden-0", "below-1", "below-2"]


def test_invalid_priority_is_refused(rt):
    with pytest.raises(greenqueue.TaskError, match="priority"):
        tasks.record.enqueue(1, priority="high")
    with pytest.raises(greenqueue.TaskError, match="priority"):
        tasks.record.enqueue(1, priority=2.0)
    for out_of_range in (2 ** 31, -2 ** 31 - 1):  # logged as a 32-bit int
        with pytest.raises(greenqueue.TaskError, match="priority"):
            tasks.record.enqueue(1, priority=out_of_range, delay=5)
    tasks.record.enqueue(1, priority=2 ** 31 - 1, delay=5)
    tasks.record.enqueue(1, priority=-2 ** 31, delay=5)
    assert rt.stats()["enqueued"] == 2


def test_durable_enqueue_runs_like_any_other(rt):
    tasks.record.enqueue("durable", durable=True)
    tasks.SayHello.enqueue("D", durable=True)
    assert rt.join(timeout=2)
    assert tasks.seen == ["durable", "Hello, D!"]


def test_closures_and_local_tasks_are_pickled_by_value(rt):
    box = []

    @greenqueue.task
    def local(x):
        box.append(x)

    class LocalTask(greenqueue.Task):
        def perform(self, x):
            box.append(-x)

    local.enqueue(1)
    LocalTask.enqueue(2)
    local.enqueue(3)
    assert rt.join(timeout=2)
    assert box == [1, -2, 3]


def test_a_local_task_that_cannot_be_pickled_fails_at_enqueue(rt):
    lock = Semaphore()

    @greenqueue.task
    def uses_lock():
        with lock:
            pass

    with pytest.raises(greenqueue.TaskError, match="cannot be pickled"):
        uses_lock.enqueue()


# -- serialisation errors ---------------------------------------------------------------------

def unpicklable():
    return (i for i in range(1))  # generators cannot be pickled, not even by cloudpickle


def test_unpicklable_positional_argument_is_named(rt):
    with pytest.raises(greenqueue.SerializationError, match="argument 'b'"):
        tasks.add.enqueue(1, unpicklable())
    with pytest.raises(greenqueue.SerializationError, match="argument 'name'"):
        tasks.SayHello.enqueue(unpicklable())


def test_unpicklable_keyword_argument_is_named(rt):
    with pytest.raises(greenqueue.SerializationError, match="argument 'punctuation'"):
        tasks.SayHello.enqueue("x", punctuation=unpicklable())
    with pytest.raises(greenqueue.SerializationError, match="argument 'a'"):
        tasks.add.enqueue(a=unpicklable(), b=1)


def test_unpicklable_extra_positional_argument_is_named_by_position(rt):
    @greenqueue.task
    def star(first, *rest):
        pass
    with pytest.raises(greenqueue.SerializationError, match="argument '#2'"):
        star.enqueue(1, 2, unpicklable())


def test_failed_enqueue_leaves_nothing_behind(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    with pytest.raises(greenqueue.SerializationError):
        tasks.record.enqueue(unpicklable())
    assert log.pending() == [] and runtime.stats()["enqueued"] == 0
    assert issubclass(greenqueue.SerializationError, greenqueue.TaskError)


# -- delays -----------------------------------------------------------------------------------

def assert_ran_on_time(key, started, delay):
    wait_until(lambda: key in tasks.stamps, timeout=delay + 2, what=key)
    waited = tasks.stamps[key] - started
    assert delay - 0.001 <= waited <= delay + 0.05, f"{key}: ran after {waited:.4f} s"


@pytest.mark.parametrize("delay", [0.1, 0.25])
def test_delay_is_honoured_within_50ms(rt, delay):
    started = time.monotonic()
    tasks.stamp.enqueue("delayed", delay=delay)
    tasks.stamp.enqueue("now")
    assert rt.stats()["delayed"] == 1
    assert_ran_on_time("delayed", started, delay)
    assert tasks.stamps["now"] < tasks.stamps["delayed"]


def test_delay_accepts_timedelta_and_zero(rt):
    started = time.monotonic()
    tasks.stamp.enqueue("td", delay=dt.timedelta(milliseconds=100))
    tasks.stamp.enqueue("zero", delay=0)
    assert_ran_on_time("td", started, 0.1)
    assert "zero" in tasks.stamps


def test_delayed_tasks_run_in_due_order(make_runtime):
    runtime = make_runtime(concurrency=1)
    tasks.record.enqueue("third", delay=0.09)
    tasks.record.enqueue("first", delay=0.03)
    tasks.record.enqueue("second", delay=0.06)
    wait_until(lambda: len(tasks.seen) == 3)
    assert tasks.seen == ["first", "second", "third"]
    assert runtime.stats()["delayed"] == 0


def test_tasks_due_at_the_same_time_run_by_priority_then_fifo(make_runtime):
    runtime = make_runtime(concurrency=1)
    occupy_single_worker(runtime)
    due = time.time() + 0.02
    for n in range(40):
        tasks.record.enqueue(n, delay_until=due)
    tasks.record.enqueue("first", delay_until=due, priority=1)
    wait_until(lambda: runtime.stats()["ready"] == 41, what="the tasks to come due")
    tasks.gate.set()
    assert runtime.join(timeout=2)
    assert tasks.seen == ["hold", "first", *range(40)]


def test_delay_until_aware_datetime(rt):
    started = time.monotonic()
    when = dt.datetime.now(dt.timezone(dt.timedelta(hours=-5))) + dt.timedelta(seconds=0.1)
    tasks.stamp.enqueue("aware", delay_until=when)
    assert_ran_on_time("aware", started, 0.1)


def test_delay_until_epoch_float(rt):
    started = time.monotonic()
    tasks.stamp.enqueue("epoch", delay_until=time.time() + 0.1)
    tasks.stamp.enqueue("past", delay_until=time.time() - 60)  # overdue: runs at once
    assert_ran_on_time("epoch", started, 0.1)
    assert tasks.stamps["past"] < tasks.stamps["epoch"]


@pytest.fixture
def tokyo_time():
    """Local time 9 hours ahead of UTC, so that naive-as-UTC would be off by 9 hours."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_delay_until_naive_datetime_is_local_time(make_runtime, tokyo_time):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    started = time.monotonic()
    tasks.stamp.enqueue("naive", delay_until=dt.datetime.now() + dt.timedelta(seconds=0.1))
    far = dt.datetime(2030, 1, 2, 3, 4, 5)
    tid = tasks.record.enqueue("later", delay_until=far)
    assert_ran_on_time("naive", started, 0.1)
    expected = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    (env,) = [e for e in log.pending() if e.id == tid]
    assert env.publish_at == expected.timestamp()
    assert runtime.stats()["delayed"] == 1


@pytest.mark.parametrize("options", [
    {"delay": -1}, {"delay": "soon"}, {"delay": True}, {"delay_until": "tomorrow"},
    {"delay_until": True}, {"delay": 1, "delay_until": time.time() + 1},
    {"delay": float("nan")}, {"delay": float("inf")}, {"delay_until": float("nan")},
    {"delay_until": float("inf")},
])
def test_invalid_delays_are_refused(rt, options):
    with pytest.raises(greenqueue.TaskError):
        tasks.record.enqueue(1, **options)
    assert rt.stats()["enqueued"] == 0


# -- wrap() -----------------------------------------------------------------------------------

def test_wrap_enqueues_a_method_call(rt):
    tid = greenqueue.wrap(tasks.Service("Ada")).greet("Hello", punctuation="!")
    greenqueue.wrap(tasks.Service("Bob"), priority=3).greet("Hi")
    assert isinstance(tid, str)
    assert tasks.seen == []
    assert rt.join(timeout=2)
    assert sorted(tasks.seen) == ["Hello, Ada!", "Hi, Bob."]


def test_wrap_with_delay(rt):
    started = time.monotonic()
    greenqueue.wrap(tasks.Service("x"), delay=0.1).when("wrapped")
    assert rt.stats()["delayed"] == 1
    assert_ran_on_time("wrapped", started, 0.1)


def test_wrap_with_delay_until(rt):
    started = time.monotonic()
    greenqueue.wrap(tasks.Service("x"), delay_until=time.time() + 0.1).when("until")
    assert_ran_on_time("until", started, 0.1)


def test_wrap_refuses_non_callable_attributes_and_unpicklable_arguments(rt):
    service = tasks.Service("x")
    with pytest.raises(greenqueue.TaskError, match="'name'"):
        greenqueue.wrap(service).name()
    with pytest.raises(AttributeError):
        greenqueue.wrap(service).missing()
    with pytest.raises(greenqueue.SerializationError, match="argument 'greeting'"):
        greenqueue.wrap(service).greet(unpicklable())


def main_script_function(source, **globals_):
    """Define a function as if in the ``__main__`` of a script (not importable by name)."""
    namespace = {"__name__": "__main__", **globals_}
    exec(source, namespace)
    return namespace


def test_a_main_script_task_is_pickled_by_value(rt):
    namespace = main_script_function(
        "def by_value_main(x):\n    sink.append(x)\n", sink=tasks.seen)
    made = greenqueue.task(namespace["by_value_main"])
    assert made.name == "__main__:by_value_main"
    made.enqueue(1)
    assert rt.join(timeout=2) and tasks.seen == [1]


def test_a_main_script_task_with_unpicklable_globals_is_found_by_name(rt):
    namespace = main_script_function(
        "def by_name_main(x):\n    with lock:\n        sink.append(x)\n",
        sink=tasks.seen, lock=Semaphore())
    made = greenqueue.task(namespace["by_name_main"])
    made.enqueue("locked")
    assert rt.join(timeout=2) and tasks.seen == ["locked"]


def test_a_builtin_without_a_signature_can_be_a_task(rt):
    biggest = greenqueue.task(max)
    assert biggest(1, 3) == 3
    biggest.enqueue(1, 3)
    assert rt.join(timeout=2) and rt.stats()["processed"] == 1
