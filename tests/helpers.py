"""Waiting on conditions with a deadline, instead of sleeping and hoping."""
import time

import gevent


def wait_until(predicate, timeout=2.0, what=None):
    """Yield to the hub until ``predicate()`` is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{what or getattr(predicate, '__name__', 'a condition')}")
        gevent.sleep(0.001)
