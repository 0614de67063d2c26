"""RQ: Redis queue, two `rq worker` processes of class SimpleWorker (one per core).

Configuration, per RQ's documentation: SimpleWorker runs jobs in the worker process instead
of forking a work horse per job; RQ's own performance notes advise it for jobs of a few
milliseconds or less (ours are no-ops). ``result_ttl=0`` because no result is wanted (greenqueue
keeps none either); ``--quiet`` because RQ logs every job at INFO otherwise. RQ has no gevent
worker in its core package.

    python rq_run.py TASKS REPEAT [CONCURRENCY]   (inside perf/.peers-venv, from perf/peers)
"""
import os
import sys

from peer_common import REDIS_URL, args, concurrency, hit, report, run_broker_peer, spawn

WORKERS = 2


def noop(i):
    hit()


def main():
    import redis
    import rq
    from rq import Queue

    import rq_run as tasks   # the module name workers import, not __main__
    n, repeat = args()
    queue = Queue("perf", connection=redis.Redis.from_url(REDIS_URL))
    rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")

    def enqueue(i):
        queue.enqueue(tasks.noop, i, result_ttl=0)

    def workers():
        return [spawn(f"rq-{k}", [rq_bin, "worker", "--url", REDIS_URL, "--quiet",
                                  "--worker-class", "rq.worker.SimpleWorker",
                                  "--name", f"perf-{os.getpid()}-{k}", "perf"])
                for k in range(WORKERS)]

    runs = run_broker_peer(n, repeat, enqueue, workers, concurrency=concurrency())
    report("rq", rq.__version__, f"{WORKERS} x `rq worker --worker-class rq.worker.SimpleWorker "
           "--quiet`, enqueue(result_ttl=0)", runs)


if __name__ == "__main__":
    main()
