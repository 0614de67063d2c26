"""Tasks the tests enqueue. Module-level, so the runtime finds them again by import path.

They report into module globals that ``reset()`` clears before and after every test. A test
defines a task inside itself only when it needs the test's own state or is about tasks that
are not importable by name (those travel pickled by value).
"""
import logging
import time

import gevent
from gevent.event import Event

import greenqueue

logger = logging.getLogger("tests.tasks")

seen = []            # what ``record`` and friends saw, in run order
runs = {}            # key -> how many times a task ran with that key
stamps = {}          # key -> time.monotonic() when the task ran
infos = []           # greenqueue.current() snapshots
gate = Event()       # ``hold`` waits on it


def reset():
    global gate
    seen.clear()
    runs.clear()
    stamps.clear()
    infos.clear()
    gate.set()       # release anything still holding from a previous test
    gate = Event()


@greenqueue.task
def record(value):
    seen.append(value)


@greenqueue.task(priority=5)
def urgent(value):
    seen.append(value)


@greenqueue.task
def hold(label="hold"):
    """Occupy a worker until the test opens ``gate``."""
    seen.append(label)
    gate.wait(10)


@greenqueue.task
def stamp(key):
    stamps[key] = time.monotonic()


@greenqueue.task
def add(a, b):
    return a + b


@greenqueue.task(max_retries=0)
def boom(n):
    raise ValueError(f"boom {n}")


@greenqueue.task
def fail_default_policy():
    raise RuntimeError("fails once, then waits for the default backoff")


def _now(exc, attempt):
    return 0


@greenqueue.task(max_retries=2, retry_interval=_now)
def always_fails(key):
    runs[key] = runs.get(key, 0) + 1
    raise ValueError(f"attempt {runs[key]} of {key}")


@greenqueue.task(max_retries=5, retry_interval=_now)
def fails_until(key, succeed_on):
    """Fail until the ``succeed_on``-th run, recording greenqueue.current() each time."""
    runs[key] = runs.get(key, 0) + 1
    info = greenqueue.current()
    infos.append((info.task_id, info.attempt, info.retries, info.name))
    if runs[key] < succeed_on:
        raise ValueError(f"not yet ({runs[key]})")


@greenqueue.task(max_retries=0)
def fails_while(key):
    """Fail on the first run only, so a task taken out of the dead set then succeeds."""
    runs[key] = runs.get(key, 0) + 1
    if runs[key] == 1:
        raise KeyError(key)
    seen.append(key)


@greenqueue.task(max_retries=3, retry_interval=_now)
def fail_then_hold(key):
    """Fail on the first run, then hold the worker on the second."""
    runs[key] = runs.get(key, 0) + 1
    if runs[key] == 1:
        raise ValueError("first attempt fails")
    seen.append(key)
    gate.wait(10)


@greenqueue.task(timeout=0.05, max_retries=0)
def too_slow():
    gevent.sleep(5)


@greenqueue.task(timeout=2)
def quick_enough():
    gevent.sleep(0.001)
    seen.append("quick")


@greenqueue.task
def log_something(message):
    logger.warning(message)


class SayHello(greenqueue.Task):
    def perform(self, name, punctuation="!"):
        seen.append(f"Hello, {name}{punctuation}")


class Important(greenqueue.Task):
    priority = 7

    def perform(self, value):
        seen.append(value)


class GiveUp(greenqueue.Task):
    """Always fails; ``retry_interval`` records its arguments and returns ``answer``."""

    max_retries = 5
    answer = None

    def retry_interval(self, exc, attempt):
        infos.append((type(exc).__name__, attempt))
        return type(self).answer

    def perform(self, key):
        runs[key] = runs.get(key, 0) + 1
        raise OSError(f"failure {runs[key]}")


class GiveUpWithNone(GiveUp):
    answer = None


class GiveUpWithFalse(GiveUp):
    answer = False


class RetryAtOnce(GiveUp):
    max_retries = 2
    answer = 0


class SlowClass(greenqueue.Task):
    timeout = 0.05
    max_retries = 0

    def perform(self):
        gevent.sleep(5)


class Service:
    """A plain object whose methods the tests call through greenqueue.wrap()."""

    def __init__(self, name):
        self.name = name

    def greet(self, greeting, punctuation="."):
        seen.append(f"{greeting}, {self.name}{punctuation}")

    def when(self, key):
        stamps[key] = time.monotonic()
