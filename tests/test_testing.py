"""Testing mode: the greenqueue_runtime fixture, drain(), the fake clock, enqueued(), eager."""
import os
import subprocess
import sys
import textwrap

import pytest

import greenqueue
from greenqueue.testing import FakeClock, TestRuntime
from tests import feature_tasks as ft
from tests import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_drain_runs_ready_tasks_and_what_they_enqueue(greenqueue_runtime):
    ft.signup.enqueue("ada@example.com")
    assert [e.name for e in greenqueue_runtime.enqueued()] == [ft.signup.name]
    greenqueue_runtime.drain()
    assert tasks.seen == [("signup", "ada@example.com"), ("welcome", "ada@example.com")]
    assert greenqueue_runtime.enqueued() == []


def test_enqueued_filters_by_task_and_decodes_arguments(greenqueue_runtime):
    ft.welcome.enqueue("a@example.com")
    ft.tick.enqueue(label="x", delay=60)
    tasks.SayHello.enqueue("Ada", punctuation="?")
    (welcome,) = greenqueue_runtime.enqueued(ft.welcome)
    assert (welcome.args, welcome.kwargs, welcome.publish_at) == (("a@example.com",), {}, 0.0)
    (tick,) = greenqueue_runtime.enqueued(ft.tick.name)
    assert tick.kwargs == {"label": "x"} and tick.publish_at > 0
    assert len(greenqueue_runtime.enqueued(tasks.SayHello)) == 1
    assert len(greenqueue_runtime.enqueued()) == 3


def test_the_first_task_error_is_raised_unless_told_otherwise(greenqueue_runtime):
    tasks.boom.enqueue(1)
    with pytest.raises(ValueError, match="boom 1"):
        greenqueue_runtime.drain()
    assert len(greenqueue_runtime.dead()) == 1  # the task itself was buried as usual
    tasks.boom.enqueue(2)
    greenqueue_runtime.drain(raise_errors=False)
    assert len(greenqueue_runtime.dead()) == 2


def test_delays_wait_for_the_fake_clock(greenqueue_runtime):
    ft.tick.enqueue("later", delay=3600)
    ft.tick.enqueue("now")
    greenqueue_runtime.drain()
    assert tasks.seen == ["now"]
    greenqueue_runtime.clock.advance(3599)
    greenqueue_runtime.drain()
    assert tasks.seen == ["now"]
    greenqueue_runtime.clock.advance(1)
    greenqueue_runtime.drain()
    assert tasks.seen == ["now", "later"]


def test_drain_delayed_runs_them_as_if_their_time_had_come(greenqueue_runtime):
    start = greenqueue_runtime.clock()
    ft.tick.enqueue("tomorrow", delay=86400)
    ft.tick.enqueue("in an hour", delay=3600)
    greenqueue_runtime.drain(delayed=True)
    assert tasks.seen == ["in an hour", "tomorrow"]
    assert greenqueue_runtime.clock() == pytest.approx(start + 86400, abs=1)


def test_retry_backoff_follows_the_fake_clock(greenqueue_runtime):
    ft.flaky.enqueue("k")
    with pytest.raises(ConnectionError):
        greenqueue_runtime.drain()
    (retry,) = greenqueue_runtime.enqueued(ft.flaky)
    assert retry.attempt == 1 and retry.publish_at > greenqueue_runtime.clock()
    greenqueue_runtime.clock.advance(22)  # the first backoff is 11-21 s
    greenqueue_runtime.drain()
    assert tasks.seen == [("flaky", "k")]


def test_drain_gives_up_at_its_timeout(greenqueue_runtime):
    tasks.hold.enqueue()
    with pytest.raises(greenqueue.DrainTimeout):
        greenqueue_runtime.drain(timeout=0.2)
    tasks.gate.set()
    greenqueue_runtime.drain()


def test_a_test_runtime_takes_an_injected_clock():
    clock = FakeClock(start=1_000_000_000)
    with TestRuntime(clock=clock) as runtime:
        ft.tick.enqueue("x", delay=10)
        (env,) = runtime.enqueued()
        assert env.publish_at == pytest.approx(1_000_000_010)


def test_eager_runs_the_task_inside_enqueue():
    with greenqueue.Runtime(eager=True) as runtime:
        task_id = ft.signup.enqueue("eager@example.com", delay=5)
        assert isinstance(task_id, str)
        assert tasks.seen == [("signup", "eager@example.com"), ("welcome", "eager@example.com")]
        assert runtime.stats()["processed"] == 2


def test_eager_pickles_the_arguments_first():
    with greenqueue.Runtime(eager=True):
        with pytest.raises(greenqueue.SerializationError, match="email"):
            ft.welcome.enqueue(x for x in "a generator")
        with pytest.raises(ValueError, match="boom 3"):
            tasks.boom.enqueue(3)  # the task's error reaches the caller
        with pytest.raises(greenqueue.TaskError):
            ft.tick.enqueue(delay=-1)


def test_eager_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GREENQUEUE_EAGER", "1")
    runtime = greenqueue.Runtime(path=tmp_path / "data")
    assert runtime.eager and runtime.backend == "memory"  # keeps nothing on disk
    monkeypatch.setenv("GREENQUEUE_EAGER", "0")
    assert not greenqueue.Runtime().eager


def test_a_plain_pytest_run_gets_the_fixture(tmp_path):
    """A fresh directory, a test file using only the fixture and drain(), plain pytest."""
    (tmp_path / "test_app.py").write_text(textwrap.dedent("""
        import greenqueue

        sent = []

        @greenqueue.task
        def send_welcome(email):
            sent.append(email)

        def test_welcome(greenqueue_runtime):
            send_welcome.enqueue("ada@example.com")
            assert sent == []
            greenqueue_runtime.drain()
            assert sent == ["ada@example.com"]
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "GREENQUEUE"))}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "test_app.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
