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

The ``shared`` scenario runs the same protocol with ``concurrency`` > 0 (the run file's third
argument, under ``python -m gevent.monkey``): step 2 is then done twice, first by one caller
(``enqueue_per_s``, then the broker is emptied again), then by ``concurrency`` greenlets
taking the tasks from one counter (``enqueue_concurrent_per_s``), and those tasks are the ones
the workers process. It also records the CPU seconds of the broker's server processes and of
the workers over each phase (``cpu``), to say where the time goes.
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


def spawn(name, argv, env=None, cwd=HERE):
    """Start one worker process of a peer, logging to perf/.data/peers/<name>.log."""
    os.makedirs(LOGS, exist_ok=True)
    log = open(os.path.join(LOGS, f"{name}.log"), "ab")
    environ = dict(os.environ, PYTHONPATH=HERE)
    environ.update(env or {})
    return subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=environ,
                            start_new_session=True)


def one_caller(enqueue, n):
    for i in range(n):
        enqueue(i)


def fan_out(enqueue, n, concurrency):
    """``enqueue(i)`` for i < n from ``concurrency`` greenlets taking turns on one counter, as
    the requests of a gevent web app would (the caller's process is monkey-patched)."""
    import gevent
    todo = iter(range(n))

    def caller():
        for i in todo:
            enqueue(i)
    gevent.joinall([gevent.spawn(caller) for _ in range(concurrency)], raise_error=True)


SERVERS = ("redis-server", "postgres")


def cpu_seconds(procs=(), servers=SERVERS):
    """{"server": CPU s of the Redis and PostgreSQL processes, "workers": of ``procs`` and
    their children, "self": of this process}; processes that exited meanwhile are not
    counted, so sample before stopping anything."""
    import psutil

    def total(ps):
        seconds = 0.0
        for p in ps:
            try:
                t = p.cpu_times()
                seconds += t.user + t.system
            except psutil.Error:
                pass
        return seconds
    server = [p for p in psutil.process_iter(["name"]) if p.info["name"] in servers]
    workers = []
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            workers += [root] + root.children(recursive=True)
        except psutil.Error:
            pass
    return {"server": total(server), "workers": total(workers),
            "self": total([psutil.Process()])}


def cpu_delta(before, after, wall):
    out = {k: round(after[k] - before[k], 3) for k in before}
    out["wall"] = round(wall, 3)
    return out


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


def run_broker_peer(n, repeat, enqueue, workers, flush=None, concurrency=0, reset=None):
    """The protocol above for a peer whose workers are processes: ``enqueue(i)`` sends one
    task, ``workers()`` starts the worker processes and returns them. ``reset()`` empties a
    broker that is not Redis database 15 (always flushed: the completion counter is there);
    ``concurrency`` > 0: the shared scenario's two enqueue phases (see above)."""
    client = redis_client()
    client.ping()
    runs = []

    def empty():
        client.flushdb()
        if reset is not None:
            reset()

    def timed(send):
        before = cpu_seconds() if concurrency else None
        start = time.perf_counter()
        send()
        if flush is not None:
            flush()
        wall = time.perf_counter() - start
        return n / wall, before and cpu_delta(before, cpu_seconds(), wall)

    for _ in range(repeat):
        empty()
        run, cpu = {}, {}
        run["enqueue_per_s"], cpu["enqueue"] = timed(lambda: one_caller(enqueue, n))
        if concurrency:
            empty()
            run["enqueue_concurrent_per_s"], cpu["enqueue_concurrent"] = timed(
                lambda: fan_out(enqueue, n, concurrency))
        if int(client.get(DONE_KEY) or 0):
            raise RuntimeError("tasks ran while no worker was running")
        before = cpu_seconds() if concurrency else None
        spawned = time.perf_counter()
        procs = workers()
        try:
            run.update(wait_done(lambda: int(client.get(DONE_KEY) or 0), n, spawned, procs,
                                 timeout=max(300.0, n / 50)))
            if concurrency:  # from the workers' start, so their boot is in it
                cpu["process"] = cpu_delta(before, cpu_seconds(procs),
                                           time.perf_counter() - spawned)
        finally:
            stop(procs)
        if concurrency:
            run["cpu"] = cpu
        runs.append(run)
    empty()
    return runs


def report(peer, version, config, runs):
    """Print the result as one JSON line: the harness reads the last line of stdout."""
    print(json.dumps({"peer": peer, "version": version, "config": config, "runs": runs}))
    sys.stdout.flush()


def args():
    return int(sys.argv[1]), int(sys.argv[2])   # tasks, repetitions


def concurrency():
    """The shared scenario's concurrent callers (third argument); 0 in the peers scenario."""
    return int(sys.argv[3]) if len(sys.argv) > 3 else 0
