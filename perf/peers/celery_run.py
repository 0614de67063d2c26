"""Celery: Redis broker, two `celery worker --pool gevent --concurrency 100` processes.

Configuration, per Celery's documentation: the gevent pool for I/O-bound work, one worker
process per core (a gevent pool uses one core), results ignored (``task_ignore_result``: no
result backend, greenqueue keeps none either), gossip, mingle and heartbeat off (they only
serve worker-to-worker events), log level WARNING (no line per task), default prefetch.

    python celery_run.py TASKS REPEAT      (inside perf/.peers-venv, from perf/peers)
"""
import os
import sys

import celery
from celery import Celery

from peer_common import REDIS_URL, args, hit, report, run_broker_peer, spawn

WORKERS, CONCURRENCY = 2, 100
app = Celery("celery_run", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, task_default_queue="perf",
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task
def noop(i):
    hit()


def main():
    import celery_run as tasks   # the module name workers import, not __main__
    n, repeat = args()
    celery_bin = os.path.join(os.path.dirname(sys.executable), "celery")

    def workers():
        return [spawn(f"celery-{k}", [celery_bin, "-A", "celery_run", "worker", "--pool",
                                      "gevent", "--concurrency", str(CONCURRENCY),
                                      "--loglevel", "WARNING", "--without-gossip",
                                      "--without-mingle", "--without-heartbeat",
                                      "--queues", "perf", "--hostname",
                                      f"perf{k}-{os.getpid()}@%h"])
                for k in range(WORKERS)]

    runs = run_broker_peer(n, repeat, tasks.noop.delay, workers)
    report("celery", celery.__version__,
           f"{WORKERS} x `celery worker --pool gevent --concurrency {CONCURRENCY} --loglevel "
           "WARNING --without-gossip --without-mingle --without-heartbeat`, "
           "task_ignore_result=True", runs)


if __name__ == "__main__":
    main()
