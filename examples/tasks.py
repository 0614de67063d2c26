"""The tasks both example apps enqueue: a slow call to another service, simulated.

Each logs through the standard ``logging`` module; ``greenqueue run`` formats lines with
``%(request_id)s``, so a task's lines carry the id of the request that enqueued it.
"""
import logging
import os

import gevent

import greenqueue

log = logging.getLogger("examples.tasks")


@greenqueue.task
def fetch_report(user_id, seconds=2.0):
    """Pretend to call a slow HTTP API (gevent.sleep yields like a real socket would)."""
    info = greenqueue.current()
    log.info("report for user %s: started (task %s, attempt %d, pid %d)", user_id,
             info.task_id, info.attempt, os.getpid())
    gevent.sleep(float(seconds))
    log.info("report for user %s: done (task %s)", user_id, info.task_id)
