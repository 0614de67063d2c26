"""The suite runs under real gevent: patch before anything else imports socket or threading.

Fixtures:
- ``make_runtime(**settings)`` starts memory-backed runtimes and stops them after the test;
- ``rt`` is one such runtime with default settings;
- every test ends with no current runtime and no configure() settings left behind.
"""
from gevent import monkey

monkey.patch_all()

import atexit  # noqa: E402

import pytest  # noqa: E402

from greenqueue import runtime as gq_runtime  # noqa: E402
from tests import tasks  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state():
    tasks.reset()
    yield
    current = gq_runtime._current
    if current is not None:
        current.stop(timeout=1)
        atexit.unregister(current.stop)  # registered by an auto-start
    gq_runtime._current = None
    gq_runtime._settings.clear()
    tasks.reset()


@pytest.fixture
def make_runtime():
    started = []

    def make(**settings):
        settings.setdefault("backend", "memory")
        runtime = gq_runtime.Runtime(**settings).start()
        started.append(runtime)
        return runtime

    yield make
    tasks.gate.set()  # let held tasks finish instead of waiting out the stop timeout
    for runtime in reversed(started):
        runtime.stop(timeout=1)


@pytest.fixture
def rt(make_runtime):
    return make_runtime()
