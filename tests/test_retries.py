"""Failures: retry count, backoff, retry_interval overrides, timeouts and the dead set."""
import pickle
import random
import time

import gevent
import pytest

import greenqueue
from greenqueue.envelope import Envelope, new_id
from greenqueue.log.memory import MemoryLog
from greenqueue.spec import TaskSpec, backoff
from tests import tasks
from tests.helpers import wait_until


def wait_dead(runtime, count=1, timeout=2.0):
    wait_until(lambda: len(runtime.dead()) >= count, timeout, what=f"{count} dead task(s)")
    return runtime.dead()


# -- backoff ----------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6])
def test_backoff_is_attempt_to_the_fourth_plus_ten_plus_jitter(attempt):
    state = random.getstate()
    try:
        random.seed(attempt)
        first = backoff(attempt)
    finally:
        random.setstate(state)
    assert first == attempt ** 4 + 10 + random.Random(attempt).uniform(0, 10 * attempt)
    values = [backoff(attempt) for _ in range(200)]
    assert all(attempt ** 4 + 10 <= v <= attempt ** 4 + 10 + 10 * attempt for v in values)
    assert len(set(values)) > 100  # jittered, so tasks that failed together spread out


def test_default_retry_interval_of_functions_and_classes_is_the_backoff():
    for policy in (tasks.record.retry_interval, TaskSpec(print).retry_interval,
                   greenqueue.Task().retry_interval):
        assert 11 <= policy(ValueError(), 1) <= 21
        assert 91 <= policy(ValueError(), 3) <= 121


def test_a_failure_is_retried_after_the_backoff(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    before = time.time()
    tid = tasks.fail_default_policy.enqueue()
    wait_until(lambda: runtime.stats()["retried"] == 1)
    after = time.time()
    (env,) = log.pending()
    assert env.id == tid and env.attempt == 1
    assert before + 11 <= env.publish_at <= after + 21
    stats = runtime.stats()
    assert (stats["failed"], stats["delayed"], stats["ready"], stats["dead"]) == (1, 1, 0, 0)


# -- retry counts -----------------------------------------------------------------------------

def test_max_retries_bounds_the_attempts_then_the_task_is_dead(rt):
    tid = tasks.always_fails.enqueue("k")
    (dead,) = wait_dead(rt)
    assert tasks.runs["k"] == 3  # the first attempt and max_retries=2 retries
    assert (dead.id, dead.name, dead.attempts) == (tid, "tests.tasks:always_fails", 3)
    stats = rt.stats()
    assert (stats["failed"], stats["retried"], stats["dead"], stats["processed"]) == (3, 2, 1, 0)


def test_max_retries_zero_means_one_attempt(rt):
    tasks.boom.enqueue(1)
    (dead,) = wait_dead(rt)
    assert dead.attempts == 1 and rt.stats()["retried"] == 0


def test_success_after_retries_leaves_nothing_behind(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    tid = tasks.fails_until.enqueue("k", succeed_on=3)
    wait_until(lambda: runtime.stats()["processed"] == 1)
    assert tasks.runs["k"] == 3
    assert [(i, a, r) for i, a, r, _ in tasks.infos] == [(tid, 1, 0), (tid, 2, 1), (tid, 3, 2)]
    assert log.pending() == [] and runtime.dead() == []


@pytest.mark.parametrize("cls", [tasks.GiveUpWithNone, tasks.GiveUpWithFalse])
def test_retry_interval_returning_none_or_false_gives_up(rt, cls):
    tid = cls.enqueue("k")
    (dead,) = wait_dead(rt)
    assert dead.id == tid and dead.attempts == 1 and tasks.runs["k"] == 1
    assert tasks.infos == [("OSError", 1)]  # retry_interval got the exception and the attempt


def test_retry_interval_returning_zero_retries_at_once(rt):
    tasks.RetryAtOnce.enqueue("k")
    (dead,) = wait_dead(rt)
    assert tasks.runs["k"] == 3 and dead.attempts == 3
    assert tasks.infos == [("OSError", 1), ("OSError", 2)]  # not asked after the last one


def test_function_task_retry_interval_option(rt):
    asked = []

    def policy(exc, attempt):
        asked.append((str(exc), attempt))
        return 0 if attempt < 2 else None

    @greenqueue.task(retry_interval=policy)
    def flaky():
        raise ValueError("nope")

    flaky.enqueue()
    (dead,) = wait_dead(rt)
    assert asked == [("nope", 1), ("nope", 2)] and dead.attempts == 2


def test_a_retry_interval_that_raises_gives_up(rt):
    def broken(exc, attempt):
        raise ZeroDivisionError

    @greenqueue.task(retry_interval=broken)
    def flaky():
        raise ValueError("original")

    flaky.enqueue()
    (dead,) = wait_dead(rt)
    assert dead.error["type"] == "ValueError" and dead.attempts == 1


# -- the dead set -----------------------------------------------------------------------------

def test_dead_set_keeps_type_message_and_traceback(rt):
    before = time.time()
    tid = tasks.boom.enqueue(7)
    (dead,) = wait_dead(rt)
    assert isinstance(dead, greenqueue.DeadTask) and dead.id == tid
    assert dead.error["type"] == "ValueError"
    assert dead.error["message"] == "boom 7"
    trace = dead.error["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"boom {n}")' in trace and "in boom" in trace
    assert trace.rstrip().endswith("ValueError: boom 7")
    assert before <= dead.error["failed_at"] <= time.time()
    assert rt.stats()["dead"] == 1


def test_dead_lists_oldest_failure_first(rt):
    ids = []
    for n in range(3):
        ids.append(tasks.boom.enqueue(n))
        wait_dead(rt, n + 1)
    assert [d.id for d in rt.dead()] == ids


def test_retry_dead_runs_the_task_again_with_a_fresh_budget(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    tid = tasks.fails_while.enqueue("k")
    wait_dead(runtime)
    assert runtime.retry_dead(tid) == tid
    assert runtime.join(timeout=2)
    assert tasks.seen == ["k"] and runtime.dead() == [] and log.pending() == []
    assert runtime.stats()["dead"] == 0


def test_retry_dead_resets_the_attempt_count(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log, concurrency=1)
    tid = tasks.always_fails.enqueue("k")
    wait_dead(runtime)
    tasks.hold.enqueue()  # keep the retried task in the queue to look at it
    wait_until(lambda: runtime.stats()["in_flight"] == 1)
    runtime.retry_dead(tid)
    (env,) = [e for e in log.pending() if e.id == tid]
    assert env.attempt == 0 and env.publish_at == 0.0
    tasks.gate.set()
    wait_dead(runtime)
    assert tasks.runs["k"] == 6


def test_retry_dead_of_an_unknown_id_raises_key_error(rt):
    tid = tasks.record.enqueue(1)  # pending, not dead
    with pytest.raises(KeyError):
        rt.retry_dead(tid)
    with pytest.raises(KeyError):
        rt.retry_dead("nope")


def test_purge_dead_clears_all_or_some(rt):
    ids = [tasks.boom.enqueue(n) for n in range(3)]
    wait_dead(rt, 3)
    assert rt.purge_dead([ids[0], "unknown"]) == 1
    assert sorted(d.id for d in rt.dead()) == sorted(ids[1:])
    assert rt.stats()["dead"] == 2
    assert rt.purge_dead() == 2
    assert rt.dead() == [] and rt.stats()["dead"] == 0
    assert rt.purge_dead() == 0


def test_purge_dead_leaves_pending_tasks_alone(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    tid = tasks.record.enqueue("later", delay=60)
    assert runtime.purge_dead([tid]) == 0
    assert [e.id for e in log.pending()] == [tid]


def test_dead_set_and_its_count_survive_a_restart(make_runtime):
    log = MemoryLog()
    first = make_runtime(backend=log)
    tasks.boom.enqueue(1)
    wait_dead(first)
    first.stop(timeout=1)
    second = make_runtime(backend=log)
    assert [d.error["message"] for d in second.dead()] == ["boom 1"]
    assert second.stats()["dead"] == 1


def test_dead_set_needs_a_running_runtime():
    runtime = greenqueue.Runtime(backend="memory")
    with pytest.raises(greenqueue.GreenqueueError, match="not running"):
        runtime.dead()


def test_a_task_that_cannot_be_decoded_goes_to_the_dead_set(make_runtime):
    log = MemoryLog()
    payload = pickle.dumps((None, (), {}, None))
    log.append(Envelope(new_id(), "tests.no_such_module:gone", payload))
    log.append(Envelope(new_id(), "tests.tasks:no_such_task", payload))
    log.append(Envelope(new_id(), "tests.tasks:record", b"not a pickle"))
    runtime = make_runtime(backend=log)
    dead = wait_dead(runtime, 3)
    assert {d.error["type"] for d in dead} == {"DecodeError"}
    messages = " ".join(d.error["message"] for d in dead)
    assert "no_such_module" in messages and "no_such_task" in messages
    assert "cannot unpickle" in messages


# -- per-attempt timeout ----------------------------------------------------------------------

def test_an_attempt_past_its_timeout_fails_with_task_timeout(rt):
    tasks.too_slow.enqueue()
    tasks.SlowClass.enqueue()
    dead = wait_dead(rt, 2)
    assert {d.error["type"] for d in dead} == {"TaskTimeout"}
    assert all("timeout of 0.05 s" in d.error["message"] for d in dead)
    assert rt.stats()["failed"] == 2
    assert issubclass(greenqueue.TaskTimeout, TimeoutError)


def test_a_timed_out_attempt_is_retried(rt):
    @greenqueue.task(timeout=0.02, max_retries=1, retry_interval=lambda exc, attempt: 0)
    def slow_once():
        attempt = greenqueue.current().attempt
        tasks.seen.append(attempt)
        if attempt == 1:
            gevent.sleep(5)

    slow_once.enqueue()
    wait_until(lambda: rt.stats()["processed"] == 1)
    assert tasks.seen == [1, 2] and rt.stats()["failed"] == 1


def test_a_task_within_its_timeout_succeeds(rt):
    tasks.quick_enough.enqueue()
    assert rt.join(timeout=2)
    assert tasks.seen == ["quick"] and rt.dead() == []


def test_a_task_cannot_swallow_its_timeout_with_except_exception(rt):
    @greenqueue.task(timeout=0.02, max_retries=0)
    def stubborn():
        try:
            gevent.sleep(5)
        except Exception:
            tasks.seen.append("swallowed")

    stubborn.enqueue()
    (dead,) = wait_dead(rt)
    assert dead.error["type"] == "TaskTimeout" and tasks.seen == []


def test_a_gevent_timeout_of_the_task_itself_counts_as_a_failure(rt):
    @greenqueue.task(max_retries=0)
    def own_timeout():
        with gevent.Timeout(0.01):
            gevent.sleep(5)

    own_timeout.enqueue()
    (dead,) = wait_dead(rt, timeout=0.5)
    assert dead.error["type"] == "Timeout"


def test_a_retry_interval_that_is_not_a_number_gives_up(rt):
    @greenqueue.task(retry_interval=lambda exc, attempt: "soon")
    def flaky():
        raise ValueError("original")

    flaky.enqueue()
    (dead,) = wait_dead(rt, timeout=0.5)
    assert dead.error["type"] == "ValueError" and dead.attempts == 1
