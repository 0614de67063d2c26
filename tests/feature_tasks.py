"""Tasks for the tests of testing mode, unique, periodic and after-response enqueues.

Module-level so that the runtime finds them again by import path; they report into
``tests.tasks.seen`` / ``runs`` (cleared around every test by conftest).
"""
import greenqueue
from tests import tasks


@greenqueue.task
def welcome(email):
    tasks.seen.append(("welcome", email))


@greenqueue.task
def signup(email):
    """Enqueues in turn: drain() must run what a drained task enqueues."""
    tasks.seen.append(("signup", email))
    welcome.enqueue(email)


@greenqueue.task(max_retries=3)
def flaky(key):
    """Fails on its first run, with the default backoff (11-21 s) before the retry."""
    tasks.runs[key] = tasks.runs.get(key, 0) + 1
    if tasks.runs[key] == 1:
        raise ConnectionError(f"{key}: first attempt fails")
    tasks.seen.append(("flaky", key))


@greenqueue.task
def tick(label="tick"):
    tasks.seen.append(label)
