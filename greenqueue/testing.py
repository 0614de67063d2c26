"""Testing mode: run an app's tasks inside a test, on demand, with a clock the test controls.

Also a pytest plugin (entry point ``pytest11``) that only adds fixtures; it changes nothing
else in a test run:

- ``greenqueue_runtime``: a started, memory-backed :class:`TestRuntime` for one test, stopped
  after it. ``enqueue`` inside the test (or inside the code under test) lands on it.

Why a real runtime rather than a recording stub: tasks then go through the same pickling,
middleware, retries and dead set as in production, so a test that passes here does not pass by
accident of a simplified path. What the test controls is *when* things run (``drain``) and
*what time it is* (``clock``): workers only see tasks ready now, and "now" is the fake clock.

Example::

    def test_signup_sends_one_welcome_email(greenqueue_runtime):
        signup("ada@example.com")
        assert len(greenqueue_runtime.enqueued(send_welcome)) == 1
        greenqueue_runtime.drain()
        assert outbox == ["ada@example.com"]
"""
import time
from dataclasses import dataclass

import pytest

from .envelope import decode
from .errors import DecodeError, DrainTimeout
from .runtime import Runtime, due_time


class FakeClock:
    """Epoch seconds that move only when the test says so: ``advance(seconds)``, ``set(t)``.

    It starts at the real time of its creation, so timestamps in logs still look sensible.
    Callable, like ``time.time``: the runtime's queue reads it to decide what is due, the
    periodic scheduler to decide which occurrence comes next.
    """

    def __init__(self, start=None):
        self._now = time.time() if start is None else float(start)
        self._listeners = []

    def __call__(self):
        return self._now

    def advance(self, seconds):
        """Move time forward; tasks and schedules that came due run on the next ``drain``."""
        if seconds < 0:
            raise ValueError("time does not go backwards; use set() to start over")
        self.set(self._now + seconds)

    def set(self, epoch):
        self._now = float(epoch)
        for listener in list(self._listeners):
            listener()

    def on_change(self, listener):
        """Call ``listener()`` whenever the time changes (the runtime's schedulers wake)."""
        self._listeners.append(listener)


@dataclass
class Enqueued:
    """A task waiting in a :class:`TestRuntime`: what was enqueued, decoded for assertions."""

    id: str
    name: str
    args: tuple
    kwargs: dict
    publish_at: float      # 0.0: ready now; else the (fake) epoch time it becomes due
    priority: int
    attempt: int           # attempts already made: > 0 for a task waiting to be retried


class _ErrorCatcher:
    """Perform middleware that remembers task exceptions so ``drain`` can re-raise them."""

    def __init__(self):
        self.errors = []

    def on_perform(self, env, call_next):
        try:
            return call_next()
        except Exception as exc:
            self.errors.append(exc)
            raise


class TestRuntime(Runtime):
    """A memory-backed runtime whose tasks run when the test drains it, on a fake clock.

    Workers still run ready tasks whenever the test yields to the hub (as in production);
    ``drain`` is the explicit "run everything now, and tell me what failed".
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, clock=None, **settings):
        settings.setdefault("backend", "memory")
        super().__init__(**settings)
        self.clock = clock if clock is not None else FakeClock()
        self._catcher = _ErrorCatcher()
        self.add_middleware(self._catcher)

    def start(self):
        super().start()
        self.queue.now = self.clock
        if isinstance(self.clock, FakeClock):
            self.clock.on_change(self._clock_moved)
        self.scheduler.run_due()  # schedules are seen now, on this clock: intervals start here
        return self

    def _clock_moved(self):
        if self.queue is not None:
            self.queue.delayed_changed.set()  # the delayed-task timer re-reads the clock
        if self.scheduler is not None:
            self.scheduler.wake()

    def push(self, spec, target, args, kwargs, delay=None, delay_until=None, priority=None,
             durable=False, **options):
        if delay is not None:  # measured on the fake clock, not the wall clock
            delay_until, delay = due_time(delay, None) - time.time() + self.clock(), None
        return super().push(spec, target, args, kwargs, delay, delay_until, priority, durable,
                            **options)

    def drain(self, delayed=False, raise_errors=True, timeout=10.0):
        """Run every ready task and those they enqueue, until nothing is ready or running.

        delayed: also run delayed tasks (retries included), moving the clock to each one's
            due time in turn, as if their time had come. Periodic tasks due on the clock
            are enqueued first; drain never moves the clock to a periodic occurrence.
        raise_errors: re-raise the first exception a task raised during this drain (the
            task itself is retried or buried as usual); False only drops them.
        timeout: real seconds; past them DrainTimeout, so a stuck task cannot hang the run.
        """
        deadline = time.monotonic() + timeout
        errors = self._catcher.errors
        try:
            while True:
                if self.scheduler is not None:
                    self.scheduler.run_due()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.join(remaining):
                    raise DrainTimeout(f"tasks still ready or running after {timeout} s: "
                                       f"{self.stats()['ready']} ready, "
                                       f"{self.dispatcher.in_flight} running")
                if errors and raise_errors:
                    raise errors[0]
                due = self.queue.next_due()
                if not delayed or due is None:
                    return
                if due > self.clock():
                    self.clock.set(due)
                self.queue.promote_due()
        finally:
            errors.clear()

    def enqueued(self, task=None):
        """Tasks waiting (ready or delayed, not running), oldest first; only ``task``'s if
        given (a task function, a Task class, or a ``module:name`` string)."""
        name = _task_name(task)
        running = self.dispatcher.running if self.dispatcher else {}
        waiting = []
        for env in self._log().pending():
            if env.id in running or (name is not None and env.name != name):
                continue
            try:
                _, args, kwargs, _ = decode(env)
            except DecodeError:
                args, kwargs = None, None
            waiting.append(Enqueued(env.id, env.name, args, kwargs, env.publish_at,
                                    env.priority, env.attempt))
        return waiting


def _task_name(task):
    if task is None or isinstance(task, str):
        return task
    spec = getattr(task, "_spec", task)  # a Task class carries its spec
    name = getattr(spec, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"enqueued() takes a task, a Task class or a task name, not {task!r}")
    return name


@pytest.fixture
def greenqueue_runtime():
    """A started memory-backed TestRuntime (fake clock) for one test; stopped after it."""
    runtime = TestRuntime().start()
    try:
        yield runtime
    finally:
        runtime.stop(timeout=1)
