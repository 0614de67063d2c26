"""The runtime's life: settings, start/stop, draining, replay, the default runtime."""
import gc
import logging
import subprocess
import sys
import textwrap
import warnings

import gevent
import pytest

import greenqueue
from greenqueue import runtime as gq_runtime
from greenqueue.log.memory import MemoryLog
from tests import tasks
from tests.helpers import wait_until

STATS_KEYS = {"ready", "delayed", "in_flight", "processed", "failed", "retried", "dead",
              "enqueued"}


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    {"concurrency": 0}, {"concurrency": -1}, {"concurrency": "5"}, {"concurrency": 2.0},
    {"concurrency": True},
    {"backpressure": "yes"}, {"backpressure": 1},
    {"high_water_mark": 0}, {"high_water_mark": "1000"},
    {"low_water_mark": -1}, {"low_water_mark": 1000}, {"low_water_mark": 2000},
    {"high_water_mark": 10, "low_water_mark": 10}, {"low_water_mark": 0.5},
    {"push_timeout": 0}, {"push_timeout": -1}, {"push_timeout": "2"},
    {"fsync_interval": 0}, {"segment_size": 0}, {"secret": 42},
    {"backend": "nope"}, {"backend": None}, {"backend": object()}, {"path": 42},
])
def test_invalid_settings_raise_config_error(settings):
    with pytest.raises(greenqueue.ConfigError):
        greenqueue.Runtime(**{"backend": "memory", **settings})
    with pytest.raises(greenqueue.ConfigError):
        greenqueue.configure(**{"backend": "memory", **settings})
    assert gq_runtime._settings == {}  # a refused configure() changes nothing


def test_a_backend_object_must_be_a_log():
    class LooksLikeALog:
        def append(self, env):
            pass

    with pytest.raises(greenqueue.ConfigError, match="Log instance"):
        greenqueue.Runtime(backend=LooksLikeALog())  # refused now, not at start()


def test_config_error_is_a_value_error_under_the_root():
    assert issubclass(greenqueue.ConfigError, greenqueue.GreenqueueError)
    assert issubclass(greenqueue.ConfigError, ValueError)


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="colour"):
        greenqueue.Runtime(backend="memory", colour="blue")
    with pytest.raises(TypeError, match="colour"):
        greenqueue.configure(colour="blue")


def test_defaults_and_derived_settings():
    runtime = greenqueue.Runtime(backend="memory")
    assert (runtime.concurrency, runtime.backpressure, runtime.high_water_mark,
            runtime.low_water_mark, runtime.push_timeout) == (100, False, 1000, 800, 2.0)
    assert greenqueue.Runtime(backend="memory", high_water_mark=50).low_water_mark == 40
    assert greenqueue.Runtime(backend="memory", low_water_mark=0).low_water_mark == 0
    assert not runtime.running and runtime.stats()["ready"] == 0


def test_a_log_instance_is_used_as_the_backend(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log)
    assert runtime.log is log
    tid = tasks.record.enqueue("x", delay=60)
    assert [e.id for e in log.pending()] == [tid]


# -- start and stop ---------------------------------------------------------------------------

def test_start_makes_the_runtime_current_until_it_stops():
    runtime = greenqueue.Runtime(backend="memory")
    assert runtime.start() is runtime
    try:
        assert greenqueue.current_runtime() is runtime and runtime.running
        tasks.record.enqueue(1)
        assert runtime.join(timeout=2) and tasks.seen == [1]
    finally:
        runtime.stop(timeout=1)
    assert greenqueue.current_runtime() is None and not runtime.running
    runtime.stop()  # a second stop is harmless


def test_context_manager(make_runtime):
    with greenqueue.Runtime(backend="memory", concurrency=3) as runtime:
        assert greenqueue.current_runtime() is runtime
        tasks.record.enqueue("ctx")
        assert runtime.join(timeout=2)
    assert greenqueue.current_runtime() is None and tasks.seen == ["ctx"]


def test_only_one_runtime_runs_at_a_time(rt):
    with pytest.raises(greenqueue.GreenqueueError, match="another"):
        greenqueue.Runtime(backend="memory").start()
    with pytest.raises(greenqueue.GreenqueueError, match="another"):
        greenqueue.start(backend="memory")


def test_a_runtime_starts_once(make_runtime):
    runtime = make_runtime()
    runtime.stop(timeout=1)
    with pytest.raises(greenqueue.GreenqueueError, match="already started"):
        runtime.start()


def test_stopping_an_unstarted_runtime_does_nothing():
    greenqueue.Runtime(backend="memory").stop()


def test_enqueue_on_a_stopped_runtime_is_refused(make_runtime):
    runtime = make_runtime()
    runtime.stop(timeout=1)
    with pytest.raises(greenqueue.GreenqueueError, match="stopped"):
        runtime.push(tasks.record, None, (1,), {})


def test_stats_counts(rt):
    tasks.record.enqueue(1)
    tasks.record.enqueue(2, delay=60)
    tasks.boom.enqueue(3)
    wait_until(lambda: rt.stats()["dead"] == 1 and rt.stats()["processed"] == 1)
    stats = rt.stats()
    assert STATS_KEYS <= set(stats)
    assert {k: stats[k] for k in STATS_KEYS} == {
        "ready": 0, "delayed": 1, "in_flight": 0, "processed": 1, "failed": 1, "retried": 0,
        "dead": 1, "enqueued": 3}


def test_join_times_out_while_a_task_runs(make_runtime):
    runtime = make_runtime(concurrency=1)
    tasks.hold.enqueue()
    assert runtime.join(timeout=0.05) is False
    tasks.gate.set()
    assert runtime.join(timeout=2) is True


def test_join_needs_a_running_runtime(make_runtime):
    with pytest.raises(greenqueue.GreenqueueError, match="not running"):
        greenqueue.Runtime(backend="memory").join(timeout=1)
    runtime = make_runtime(concurrency=1)
    tasks.hold.enqueue()
    tasks.record.enqueue("never")
    runtime.stop(timeout=0.01)
    with pytest.raises(greenqueue.GreenqueueError, match="not running"):
        runtime.join()  # would wait forever: nothing drains a stopped runtime


def test_join_does_not_wait_for_delayed_tasks(rt):
    tasks.record.enqueue("later", delay=60)
    assert rt.join(timeout=1) is True
    assert rt.stats()["delayed"] == 1


def test_stop_waits_for_running_tasks_within_the_timeout(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log, concurrency=2)
    tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1)
    tasks.gate.set()
    runtime.stop(timeout=5)
    assert tasks.seen == ["hold"] and log.pending() == []
    assert runtime.stats()["interrupted"] == 0


def test_stop_leaves_unfinished_tasks_pending_in_the_log(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log, concurrency=1)
    held = tasks.hold.enqueue()
    wait_until(lambda: runtime.stats()["in_flight"] == 1)
    queued = [tasks.record.enqueue(n) for n in range(3)]
    later = tasks.record.enqueue("later", delay=60)
    runtime.stop(timeout=0.05)
    pending = {env.id: env for env in log.pending()}
    assert set(pending) == {held, later, *queued}
    assert pending[held].attempt == 0  # interrupted by the stop: not a failure
    assert tasks.seen == ["hold"]
    stats = runtime.stats()
    assert (stats["interrupted"], stats["failed"], stats["processed"]) == (1, 0, 0)


def test_an_attempt_interrupted_by_stop_keeps_its_attempt_count(make_runtime):
    log = MemoryLog()
    runtime = make_runtime(backend=log, concurrency=1)
    tid = tasks.fail_then_hold.enqueue("k")
    wait_until(lambda: tasks.seen == ["k"], what="the second attempt to hold")
    runtime.stop(timeout=0.05)
    (env,) = log.pending()
    assert env.id == tid and env.attempt == 1  # one failure; the interrupted one not counted
    stats = runtime.stats()
    assert (stats["failed"], stats["retried"], stats["interrupted"]) == (1, 1, 1)


def test_pending_tasks_are_replayed_on_the_next_start(make_runtime):
    log = MemoryLog()
    first = make_runtime(backend=log, concurrency=1)
    tasks.fail_then_hold.enqueue("k")
    wait_until(lambda: tasks.seen == ["k"])
    tasks.record.enqueue("queued")
    first.stop(timeout=0.05)
    tasks.reset()  # opens the old gate, closes a new one
    tasks.runs["k"] = 1  # the next run of fail_then_hold is its second: it holds
    second = make_runtime(backend=log, concurrency=2)
    wait_until(lambda: sorted(tasks.seen) == ["k", "queued"])
    assert tasks.runs["k"] == 2
    tasks.gate.set()
    assert second.join(timeout=2)
    assert log.pending() == []


# -- the default runtime ----------------------------------------------------------------------

def test_first_enqueue_starts_the_default_runtime(caplog):
    greenqueue.configure(backend="memory", concurrency=2)
    assert greenqueue.current_runtime() is None
    with caplog.at_level(logging.INFO, logger="greenqueue.runtime"):
        tasks.record.enqueue("auto")
    runtime = greenqueue.current_runtime()
    assert runtime is not None and runtime.concurrency == 2 and runtime.backend == "memory"
    assert "started the default runtime" in caplog.text and "memory" in caplog.text
    assert runtime.join(timeout=2) and tasks.seen == ["auto"]
    tasks.SayHello.enqueue("again")
    greenqueue.wrap(tasks.Service("w")).greet("Hi")
    assert greenqueue.current_runtime() is runtime  # started once
    assert runtime.join(timeout=2) and len(tasks.seen) == 3
    greenqueue.stop()
    assert greenqueue.current_runtime() is None and not runtime.running


@pytest.mark.parametrize("enqueue", [
    lambda: tasks.SayHello.enqueue("x"),
    lambda: greenqueue.wrap(tasks.Service("x")).greet("y"),
])
def test_task_classes_and_wrap_start_the_default_runtime_too(enqueue):
    greenqueue.configure(backend="memory")
    enqueue()
    assert greenqueue.current_runtime() is not None


def test_configure_start_stop_manage_the_default_runtime():
    greenqueue.configure(backend="memory", concurrency=4)
    greenqueue.configure(push_timeout=1.5)  # settings accumulate
    runtime = greenqueue.start(concurrency=3)  # and start() may add more
    assert greenqueue.current_runtime() is runtime
    assert (runtime.concurrency, runtime.push_timeout, runtime.backend) == (3, 1.5, "memory")
    tasks.record.enqueue("default")
    assert runtime.join(timeout=2) and tasks.seen == ["default"]
    greenqueue.stop(timeout=1)
    assert greenqueue.current_runtime() is None
    greenqueue.stop()  # nothing running: nothing to do


def test_an_explicitly_started_runtime_takes_precedence(rt):
    greenqueue.configure(backend="memory", concurrency=7)
    tasks.record.enqueue(1)
    assert greenqueue.current_runtime() is rt and rt.concurrency == 100


def test_delayed_tasks_survive_a_restart(make_runtime):
    log = MemoryLog()
    first = make_runtime(backend=log)
    tid = tasks.record.enqueue("later", delay=60)
    soon = tasks.record.enqueue("soon", delay=0.05)
    first.stop(timeout=1)
    second = make_runtime(backend=log)
    wait_until(lambda: tasks.seen == ["soon"])  # once: before or after the restart
    assert [e.id for e in log.pending()] == [tid] and soon != tid
    assert second.stats()["delayed"] == 1


def test_no_warning_when_started_in_a_patched_process():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        greenqueue.start(backend=MemoryLog())  # not "memory": the check runs, and passes
    greenqueue.stop(timeout=1)


# -- how tasks are run --------------------------------------------------------------------------

def test_workers_are_reused_not_spawned_per_task(make_runtime):
    runtime = make_runtime(concurrency=3)
    used = set()

    @greenqueue.task
    def note_greenlet():
        used.add(gevent.getcurrent())

    for _ in range(300):
        note_greenlet.enqueue()
    assert runtime.join(timeout=5)
    assert 1 <= len(used) <= 3


def live_greenlets():
    return sum(1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead)


def test_delayed_tasks_wait_on_one_timer_not_a_greenlet_each(rt):
    before = live_greenlets()
    for n in range(200):
        tasks.record.enqueue(n, delay=30 + n)
    assert live_greenlets() == before and rt.stats()["delayed"] == 200


def progress_seen_by_another_greenlet(runtime, total):
    """Drain ``total`` no-op tasks; return ``processed`` as a heartbeat greenlet saw it."""
    seen = [0]

    def heartbeat():
        while seen[-1] < total:
            gevent.sleep(0)
            seen.append(runtime.stats()["processed"])

    beat = gevent.spawn(heartbeat)
    gevent.sleep(0)  # the heartbeat is running before the tasks arrive
    for n in range(total):
        tasks.add.enqueue(n, 1)
    assert runtime.join(timeout=20)
    beat.join(timeout=2)
    return seen


def test_the_hub_keeps_serving_other_greenlets_while_tasks_drain(make_runtime):
    seen = progress_seen_by_another_greenlet(make_runtime(concurrency=4), 20000)
    assert len({n for n in seen if 0 < n < 20000}) >= 3, seen  # turns between batches


def test_other_greenlets_get_turns_with_the_default_concurrency(rt):
    seen = progress_seen_by_another_greenlet(rt, 20000)
    assert max(b - a for a, b in zip(seen, seen[1:])) <= 5000, seen


def test_atexit_drains_an_auto_started_runtime(tmp_path):
    script = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        import gevent, greenqueue

        @greenqueue.task
        def slow():
            gevent.sleep(0.1)
            print("finished", flush=True)

        greenqueue.configure(backend="memory")
        slow.enqueue()
        gevent.sleep(0)  # the task starts; the program then ends while it runs
        print("exiting", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["exiting", "finished"]


def test_concurrency_bounds_the_tasks_running_at_once(make_runtime):
    runtime = make_runtime(concurrency=3)
    for n in range(5):
        tasks.hold.enqueue(n)
    wait_until(lambda: runtime.stats()["in_flight"] == 3)
    assert runtime.stats()["ready"] == 2 and sorted(tasks.seen) == [0, 1, 2]
    tasks.gate.set()
    assert runtime.join(timeout=2) and sorted(tasks.seen) == [0, 1, 2, 3, 4]
