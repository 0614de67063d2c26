"""Huey: SqliteHuey with its consumer running in this process on greenlet workers.

Configuration, per Huey's documentation: ``SqliteHuey`` (the broker-less storage, the closest
to greenqueue's own file log) with ``fsync=False`` (writes reach the kernel, no fsync per
commit: the same promise greenqueue's log makes per task), ``results=False`` (no result wanted),
WAL journal (its default); the consumer created with ``huey.create_consumer(workers=8,
worker_type="greenlet", periodic=False, initial_delay=0.001)`` and started in-process on a
monkey-patched interpreter.

Same protocol as the Redis peers (see peer_common.py), except that the no-op task, being in
this process, notes the clock itself at the first and the last task (an integer compare per
task): the consumer's greenlets never yield between tasks, so an outside poller could not.

    python huey_run.py TASKS REPEAT      (inside perf/.peers-venv, from perf/peers)
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import huey as huey_package  # noqa: E402
from huey import SqliteHuey  # noqa: E402

from peer_common import args, report, wait_done  # noqa: E402

WORKERS = 8
done = 0
first_at = last_at = None


def main():
    global done
    n, repeat = args()
    runs = []
    for _ in range(repeat):
        tmp = tempfile.mkdtemp(prefix="gq-huey-")
        huey = SqliteHuey("perf", filename=os.path.join(tmp, "huey.db"), fsync=False,
                          results=False)

        @huey.task()
        def noop(i):
            global done, first_at, last_at
            done += 1
            if done == 1:
                first_at = time.perf_counter()
            elif done == n:
                last_at = time.perf_counter()

        done = 0
        start = time.perf_counter()
        for i in range(n):
            noop(i)
        enqueued = time.perf_counter()
        consumer = huey.create_consumer(workers=WORKERS, worker_type="greenlet",
                                        periodic=False, initial_delay=0.001)
        spawned = time.perf_counter()
        consumer.start()
        try:
            wait_done(lambda: done, n, spawned)
        finally:
            consumer.stop(graceful=True)
            shutil.rmtree(tmp, ignore_errors=True)
        run = {"enqueue_per_s": n / (enqueued - start), "worker_start_s": first_at - spawned,
               "process_per_s": (n - 1) / (last_at - first_at)}
        runs.append(run)
    report("huey", huey_package.__version__,
           f"SqliteHuey(fsync=False, results=False), in-process consumer: workers={WORKERS}, "
           "worker_type='greenlet', periodic=False, initial_delay=0.001", runs)


if __name__ == "__main__":
    main()
