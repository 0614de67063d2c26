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


@greenqueue.task(unique=True)
def refresh(account):
    tasks.seen.append(("refresh", account))


@greenqueue.task(unique=True, unique_for=60)
def refresh_briefly(account):
    tasks.seen.append(("refresh_briefly", account))


class Rebuild(greenqueue.Task):
    unique = True

    def perform(self, index):
        tasks.seen.append(("rebuild", index))


@greenqueue.task(max_retries=1)
def race_once(run_file, done_dir, processes):
    """Record one run, but only once every racing process finished enqueueing: the key is
    held (pending, then running) for the whole race, so every enqueue must see it."""
    import os
    import time

    import gevent
    deadline = time.monotonic() + 60
    while len(os.listdir(done_dir)) < processes and time.monotonic() < deadline:
        gevent.sleep(0.01)
    with open(run_file, "a") as f:
        f.write(f"{os.getpid()}\n")


@greenqueue.task
def notify(user_id):
    """Records the request id it was enqueued under (log context) with its argument."""
    from greenqueue.context import _log_context
    tasks.seen.append((user_id, (_log_context.get() or {}).get("request_id")))
