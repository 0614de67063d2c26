"""Periodic tasks in one process, on a fake clock: definitions, intervals, cron across a DST
change, restarts inside an interval, catch-up. Leadership across processes: test_periodic_run."""
import datetime as dt

import pytest

import greenqueue
from greenqueue import scheduler
from greenqueue.testing import FakeClock, TestRuntime
from tests import feature_tasks as ft
from tests import tasks

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def no_schedules_left():
    before = scheduler.registered()
    yield
    scheduler._registry.clear()
    scheduler._registry.update(before)


def at(*fields):
    return dt.datetime(*fields, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("options, message", [
    ({"cron": "61 * * * *"}, "invalid cron line"),
    ({"cron": "*/5 * * *"}, "invalid cron line"),
    ({"cron": "0 9 * * *", "tz": "Mars/Olympus_Mons"}, "unknown time zone"),
    ({"every": 0}, "positive number"),
    ({"every": "5m"}, "positive number"),
    ({}, "one of them"),
    ({"every": 5, "cron": "* * * * *"}, "one of them"),
    ({"every": 5, "tz": "Europe/Berlin"}, "tz applies to cron"),
])
def test_bad_schedules_fail_at_definition(options, message):
    with pytest.raises(greenqueue.ConfigError, match=message):
        greenqueue.schedule(ft.tick, **options)


def test_periodic_needs_a_task_without_required_arguments():
    with pytest.raises(greenqueue.ConfigError, match="arguments do not fit"):
        greenqueue.periodic(every=60)(ft.welcome)
    greenqueue.schedule(ft.welcome, every=60, args=("ops@example.com",))  # takes them here
    with pytest.raises(greenqueue.ConfigError, match="named"):
        greenqueue.schedule(ft.welcome, every=60, args=("other@example.com",))
    with pytest.raises(greenqueue.ConfigError, match="greenqueue task"):
        greenqueue.schedule(print, every=60)


def test_every_runs_once_per_interval_on_the_clock(greenqueue_runtime):
    greenqueue.periodic(every=dt.timedelta(minutes=1))(ft.tick)
    clock = greenqueue_runtime.clock
    greenqueue_runtime.drain()
    assert tasks.seen == []
    clock.advance(60)
    greenqueue_runtime.drain()
    assert tasks.seen == ["tick"]
    clock.advance(59)
    greenqueue_runtime.drain()
    assert tasks.seen == ["tick"]
    clock.advance(1)
    greenqueue_runtime.drain()
    clock.advance(600)  # ten missed slots run once, not ten times
    greenqueue_runtime.drain()
    assert tasks.seen == ["tick"] * 3
    (row,) = greenqueue_runtime.schedules()
    assert row["name"] == ft.tick.name and row["schedule"] == "every 60 s"
    assert row["next_run"] == pytest.approx(clock() + 60, abs=1)
    assert row["last_outcome"] == "done" and row["leader"] is True


def test_schedule_passes_arguments_and_class_tasks_can_be_periodic(greenqueue_runtime):
    greenqueue.schedule(ft.tick, every=10, kwargs={"label": "tock"}, name="tock")
    greenqueue.schedule(tasks.SayHello, every=20, args=("cron",))

    @greenqueue.periodic(every=20)
    class Nightly(greenqueue.Task):
        def perform(self):
            tasks.seen.append("nightly")

    greenqueue_runtime.drain()  # the scheduler sees them: intervals start now
    greenqueue_runtime.clock.advance(20)
    greenqueue_runtime.drain()
    assert sorted(map(str, tasks.seen)) == ["Hello, cron!", "nightly", "tock"]


def test_a_cron_line_follows_local_time_across_a_dst_change():
    """Europe/Berlin moves to summer time on 2024-03-31: 09:00 local is 08:00 UTC the day
    before and 07:00 UTC that day."""
    greenqueue.periodic(cron="0 9 * * *", tz="Europe/Berlin")(ft.tick)
    clock = FakeClock(start=at(2024, 3, 30, 7, 0))
    with TestRuntime(clock=clock) as runtime:
        runtime.drain()
        clock.set(at(2024, 3, 30, 7, 59, 59))
        runtime.drain()
        assert tasks.seen == []
        clock.set(at(2024, 3, 30, 8, 0))
        runtime.drain()
        assert tasks.seen == ["tick"]
        clock.set(at(2024, 3, 31, 6, 59, 59))
        runtime.drain()
        assert tasks.seen == ["tick"]
        clock.set(at(2024, 3, 31, 7, 0))
        runtime.drain()
        assert tasks.seen == ["tick", "tick"]
        (row,) = runtime.schedules()
        assert row["next_run"] == at(2024, 4, 1, 7, 0)


def test_a_restart_inside_an_interval_does_not_run_it_again(tmp_path):
    greenqueue.periodic(every=60)(ft.tick)
    start = at(2030, 1, 1, 12, 0)

    def runtime_at(t):
        return TestRuntime(clock=FakeClock(start=t), backend="disk", path=tmp_path / "data")

    with runtime_at(start) as runtime:
        runtime.clock.advance(60)
        runtime.drain()
    assert tasks.seen == ["tick"]
    with runtime_at(start + 90) as runtime:  # slot 120 is still ahead
        runtime.drain()
        assert tasks.seen == ["tick"]
        runtime.clock.set(start + 120)
        runtime.drain()
    assert tasks.seen == ["tick"] * 2
    with runtime_at(start + 1000) as runtime:  # 14 slots missed: one catch-up run
        runtime.drain()
        assert tasks.seen == ["tick"] * 3
        assert runtime.schedules()[0]["next_run"] == start + 1020


def test_catch_up_false_skips_missed_occurrences(tmp_path):
    greenqueue.periodic(every=60, catch_up=False)(ft.tick)
    start = at(2030, 1, 1, 12, 0)
    with TestRuntime(clock=FakeClock(start=start), backend="disk", path=tmp_path) as runtime:
        runtime.clock.advance(60)
        runtime.drain()
    with TestRuntime(clock=FakeClock(start=start + 1000), backend="disk",
                     path=tmp_path) as runtime:
        runtime.drain()
        assert tasks.seen == ["tick"]
        runtime.clock.set(start + 1020)
        runtime.drain()
        assert tasks.seen == ["tick", "tick"]
