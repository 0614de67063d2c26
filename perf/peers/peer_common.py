"""Shared by the peers' run files. Runs in the peers' own virtualenv (perf/.peers-venv) and
never imports greenqueue, so no peer can see or slow our code, nor we theirs.

Each peer run is the same protocol, so the figures compare like with like:

1. empty the broker (Redis database 15, which nothing else here uses; ``FLUSHDB`` of it only);
2. enqueue ``n`` no-op tasks one by one from one client, as web requests would, with no
   worker running: that time gives **enqueue/s**;
3. start the peer's own workers (real processes, its documented command line); the no-op task
   only adds one to a per-process counter, and a background thread (a greenlet in gevent
   workers) adds that counter to a Redis key every 5 ms, off the task's path;
4. poll the key every 2 ms: from the first completed task seen to the last, the rate is
   **process/s** (worker boot time is reported apart, as ``worker_start_s``);
5. stop the workers (SIGTERM, then SIGKILL after 10 s).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

REDIS_URL = os.environ.get("PERF_REDIS_URL", "redis://127.0.0.1:6379/15")
DONE_KEY = "perf:done"
HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = os.path.join(os.path.dirname(HERE), ".data", "peers")

_count = 0
_flusher = None


def hit():
    """The whole body of every peer's no-op task."""
    global _count, _flusher
    _count += 1
    if _flusher is None:
        _flusher = True
        threading.Thread(target=_flush, daemon=True).start()


def _flush():
    import redis
    client = redis.Redis.from_url(REDIS_URL)
    sent = 0
    while True:
        time.sleep(0.005)
        count = _count
        if count != sent:
            client.incrby(DONE_KEY, count - sent)
            sent = count


def redis_client():
    import redis
    return redis.Redis.from_url(REDIS_URL)


def spawn(name, argv, env=None):
    """Start one worker process of a peer, logging to perf/.data/peers/<name>.log."""
    os.makedirs(LOGS, exist_ok=True)
    log = open(os.path.join(LOGS, f"{name}.log"), "ab")
    environ = dict(os.environ, PYTHONPATH=HERE, **(env or {}))
    return subprocess.Popen(argv, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, env=environ,
                            start_new_session=True)


def stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_done(read, n, started, procs=(), timeout=300.0):
    """Poll ``read()`` (tasks done) until it reaches ``n``; return first/last observations."""
    first = None
    deadline = time.monotonic() + timeout
    while True:
        done = read()
        now = time.perf_counter()
        if done and first is None:
            first = (now, done)
        if done >= n:
            return {"worker_start_s": first[0] - started,
                    "process_per_s": (n - first[1]) / max(now - first[0], 1e-9)
                    if n > first[1] else None}
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited early with status {p.returncode}; "
                                   f"see {LOGS}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} tasks done after {timeout:.0f} s")
        time.sleep(0.002)


def run_broker_peer(n, repeat, enqueue, workers, flush=None):
    """The protocol above for a peer whose workers are processes: ``enqueue(i)`` sends one
    task, ``workers()`` starts the worker processes and returns them."""
    client = redis_client()
    client.ping()
    runs = []
    for _ in range(repeat):
        client.flushdb()
        start = time.perf_counter()
        for i in range(n):
            enqueue(i)
        if flush is not None:
            flush()
        enqueued = time.perf_counter()
        if int(client.get(DONE_KEY) or 0):
            raise RuntimeError("tasks ran while no worker was running")
        spawned = time.perf_counter()
        procs = workers()
        try:
            run = wait_done(lambda: int(client.get(DONE_KEY) or 0), n, spawned, procs)
        finally:
            stop(procs)
        run["enqueue_per_s"] = n / (enqueued - start)
        runs.append(run)
    client.flushdb()
    return runs


def report(peer, version, config, runs):
    """Print the result as one JSON line: the harness reads the last line of stdout."""
    print(json.dumps({"peer": peer, "version": version, "config": config, "runs": runs}))
    sys.stdout.flush()


def args():
    return int(sys.argv[1]), int(sys.argv[2])   # tasks, repetitions
