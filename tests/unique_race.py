"""One racer of test_unique: enqueue one unique_key N times on a shared data directory.

usage: python -m tests.unique_race DATA_DIR WORK_DIR N NAME
DATA_DIR may be a redis:// or postgresql:// URL: then the racers share that backend (two
hosts, each with a data directory of its own under WORK_DIR).
Waits for WORK_DIR/go, enqueues, writes WORK_DIR/done/NAME with the ids it got, then stays
until the task has run (WORK_DIR/runs has a line) and its own runtime is idle.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

import greenqueue  # noqa: E402
from tests import feature_tasks as ft  # noqa: E402


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting: {predicate}")
        gevent.sleep(0.005)


def main(data_dir, work, n, name):
    runs, done = os.path.join(work, "runs"), os.path.join(work, "done")
    if "://" in data_dir:
        runtime = greenqueue.Runtime(backend=data_dir, path=os.path.join(work, f"data-{name}"))
    else:
        runtime = greenqueue.Runtime(path=data_dir, fsync_interval=0.05)
    runtime.start()
    open(os.path.join(work, f"ready-{name}"), "w").close()
    wait_for(lambda: os.path.exists(os.path.join(work, "go")))
    ids = [ft.race_once.enqueue(runs, done, 2, unique_key="invoice:42") for _ in range(n)]
    with open(os.path.join(done, name), "w") as f:
        json.dump(sorted(set(ids)), f)
    wait_for(lambda: os.path.exists(runs) and os.path.getsize(runs) > 0)
    runtime.join(timeout=30)
    runtime.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
