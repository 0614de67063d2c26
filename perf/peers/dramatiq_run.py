"""Dramatiq: Redis broker, `dramatiq-gevent` with two processes (one per core) of 50 greenlets.

Configuration, per Dramatiq's documentation: the gevent launcher for I/O-bound work, default
middleware (retries, age and time limits, callbacks, pipelines), one process per core.

    python dramatiq_run.py TASKS REPEAT [CONCURRENCY]   (inside perf/.peers-venv, from perf/peers)
"""
import os
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peer_common import REDIS_URL, args, concurrency, hit, report, run_broker_peer, spawn

PROCESSES, THREADS = 2, 50
dramatiq.set_broker(RedisBroker(url=REDIS_URL))


@dramatiq.actor(queue_name="perf")
def noop(i):
    hit()


def main():
    import dramatiq_run as tasks   # the module name workers import, not __main__
    n, repeat = args()
    launcher = os.path.join(os.path.dirname(sys.executable), "dramatiq-gevent")

    def workers():
        return [spawn("dramatiq", [launcher, "dramatiq_run", "--processes", str(PROCESSES),
                                   "--threads", str(THREADS), "--queues", "perf"])]

    runs = run_broker_peer(n, repeat, tasks.noop.send, workers, concurrency=concurrency())
    report("dramatiq", dramatiq.__version__,
           f"`dramatiq-gevent --processes {PROCESSES} --threads {THREADS}`, RedisBroker, "
           "default middleware", runs)


if __name__ == "__main__":
    main()
