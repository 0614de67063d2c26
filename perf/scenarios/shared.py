"""shared: greenqueue's shared backends (Redis, PostgreSQL) against RQ and Dramatiq on Redis and
procrastinate on PostgreSQL, all on loopback in the same run.

Per system and repetition, the peers' protocol (perf/peers/peer_common.py) with two enqueue
phases:

1. empty the backend; enqueue ``n`` no-op tasks from one caller → enqueue/s, 1 caller;
2. empty it again; enqueue ``n`` from ``CONCURRENCY`` greenlets of a monkey-patched process
   taking turns on one counter (the many requests of a gevent web app) → enqueue/s,
   concurrent. No worker runs during either phase;
3. start each system's workers for 2 cores; from the first completed task to the last →
   process/s (the task's body is ``hit()``: a per-process counter added to a Redis key every
   5 ms, off the task's path);
4. stop the workers.

greenqueue's side runs in a fresh interpreter per repetition and backend (``measure`` below).
The enqueuing process is a ``Runtime(backend=URL)`` whose fetcher is stopped at once: a pure
producer, as the peers' enqueuing clients are. Its workers are what a user deploys on 2 cores:
``greenqueue run perf.shared_tasks:app --workers 2 --backend URL`` (a supervisor and two
pre-forked processes, each with the default 100 worker greenlets). Redis: database 14, prefix
``perf-shared``, flushed before each phase; PostgreSQL: database ``test``, schema
``perf_shared``, dropped before each phase (the runtime creates it at start, untimed) and
``ANALYZE``d before the workers start, as procrastinate's table is (untimed).

Besides the rates, each phase records the CPU seconds of the Redis and PostgreSQL server
processes, of the workers and of the enqueuing process (``cpu`` in the JSON), and on Redis
the commands the server ran (INFO commandstats): where the time goes.

Targets (the issue): greenqueue on Redis ≥ 5 × RQ and ≥ 2 × Dramatiq, greenqueue on
PostgreSQL ≥ 3 × procrastinate, on the concurrent enqueue and on process.
"""
import os
import shutil
import socket
import sys
import tempfile
import time

from perf.context import ROOT, in_child
from perf.report import Row, emit, medians

CONCURRENCY = 50
REDIS_BASE = "redis://127.0.0.1:6379/14"
URLS = {"redis": f"{REDIS_BASE}?prefix=perf-shared",
        "postgres": "postgresql://postgres@127.0.0.1:5432/test?schema=perf_shared"}
SCHEMA = "perf_shared"
# peer -> (greenqueue backend it is compared with, target multiple)
TARGETS = {"rq": ("redis", 5), "dramatiq": ("redis", 2), "procrastinate": ("postgres", 3)}
PHASES = (("enqueue_concurrent_per_s", f"enqueue, {CONCURRENCY} concurrent"),
          ("enqueue_per_s", "enqueue, 1 caller"), ("process_per_s", "process"))


# -- greenqueue's side, in a fresh interpreter (python -m perf.child) ---------------------------

def _empty(kind):
    import redis
    from perf.peers.peer_common import REDIS_URL
    redis.Redis.from_url(REDIS_URL).flushdb()      # the completion counter's database
    if kind == "redis":
        redis.Redis.from_url(REDIS_BASE).flushdb()
    else:
        import psycopg
        with psycopg.connect(URLS["postgres"].split("?")[0], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def _commands():
    import redis
    stats = redis.Redis.from_url(REDIS_BASE).info("commandstats")
    return {k.split("_", 1)[1]: v["calls"] for k, v in stats.items()}


def _enqueue_phase(kind, n, send):
    """Empty the backend, start a producer runtime, time ``send(enqueue, n)``."""
    import greenqueue
    from perf import shared_tasks
    from perf.peers.peer_common import cpu_delta, cpu_seconds
    _empty(kind)
    rt = greenqueue.Runtime(backend=URLS[kind]).start()
    try:
        rt.fetcher.stop()        # a pure producer: this process claims nothing
        commands, before = _commands(), cpu_seconds()
        start = time.perf_counter()
        send(shared_tasks.noop.enqueue, n)
        wall = time.perf_counter() - start
        cpu = cpu_delta(before, cpu_seconds(), wall)
        cpu["redis_calls"] = _calls_since(commands)
    finally:
        rt.stop()
    return n / wall, cpu


def _calls_since(before):
    after = _commands()
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0
            and k not in ("info",)}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind, n, concurrency):
    """One repetition of the protocol above for greenqueue on ``kind`` (redis, postgres)."""
    import redis
    from perf.peers.peer_common import (DONE_KEY, REDIS_URL, cpu_delta, cpu_seconds, fan_out,
                                        one_caller, spawn, stop, wait_done)
    run, cpu = {}, {}
    run["enqueue_per_s"], cpu["enqueue"] = _enqueue_phase(kind, n, one_caller)
    run["enqueue_concurrent_per_s"], cpu["enqueue_concurrent"] = _enqueue_phase(
        kind, n, lambda enqueue, n: fan_out(enqueue, n, concurrency))
    counter = redis.Redis.from_url(REDIS_URL)
    if int(counter.get(DONE_KEY) or 0):
        raise RuntimeError("tasks ran while no worker was running")
    data = tempfile.mkdtemp(prefix="gq-shared-")
    binary = os.path.join(os.path.dirname(sys.executable), "greenqueue")
    argv = [binary, "run", "perf.shared_tasks:app", "--workers", "2", "--backend", URLS[kind],
            "--data-dir", data, "--bind", f"127.0.0.1:{_free_port()}",
            "--log-level", "warning", "--no-access-log"]
    if kind == "postgres":  # as for procrastinate: the statistics autovacuum would keep
        import psycopg
        with psycopg.connect(URLS["postgres"].split("?")[0], autocommit=True) as conn:
            conn.execute(f"ANALYZE {SCHEMA}.greenqueue_tasks")
    commands, before = _commands(), cpu_seconds()
    spawned = time.perf_counter()
    procs = [spawn(f"greenqueue-{kind}", argv, env={"PYTHONPATH": ROOT}, cwd=ROOT)]
    try:
        run.update(wait_done(lambda: int(counter.get(DONE_KEY) or 0), n, spawned, procs))
        cpu["process"] = cpu_delta(before, cpu_seconds(procs), time.perf_counter() - spawned)
        cpu["process"]["redis_calls"] = _calls_since(commands)
    finally:
        stop(procs)
        shutil.rmtree(data, ignore_errors=True)
    _empty(kind)
    run["cpu"] = cpu
    return run


# -- the scenario --------------------------------------------------------------------------------

def _postgres_up():
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return None
    except OSError as exc:
        return f"no PostgreSQL at 127.0.0.1:5432: {exc}"


def run(ctx):
    from perf import peers
    n = ctx.size(50_000, 10_000)
    redis_problem = peers.ensure_redis()    # the completion counter is in Redis for everyone
    problems = {"redis": redis_problem, "postgres": redis_problem or _postgres_up()}
    results, rows = {}, []
    gq = {}
    for kind in ("redis", "postgres"):
        if problems[kind]:
            results[f"greenqueue_{kind}"] = {"skipped": problems[kind]}
            rows.append(Row("shared", f"greenqueue {kind}", f"skipped: {problems[kind]}"))
            continue
        try:
            runs = [in_child("scenarios.shared:measure", timeout=1800, kind=kind, n=n,
                             concurrency=CONCURRENCY) for _ in range(ctx.repeat)]
        except Exception as exc:
            reason = f"run failed: {type(exc).__name__}: {str(exc)[-300:]}"
            results[f"greenqueue_{kind}"] = {"skipped": reason}
            rows.append(Row("shared", f"greenqueue {kind}", f"skipped: {reason[:120]}"))
            continue
        gq[kind] = m = medians(runs)
        results[f"greenqueue_{kind}"] = dict(m, url=URLS[kind], repetitions=runs)
        for key, label in PHASES:
            rows.append(Row("shared", f"greenqueue {kind} {label}", m[key], "/s",
                            ctx.ratio(m[key], "process_per_s" if key == "process_per_s"
                                      else "enqueue_per_s")))
    for name, (kind, target) in TARGETS.items():
        reason = problems[kind] or peers.ensure_peer(name) or \
            peers.ensure_module("gevent", ["gevent"])
        if reason is None:
            try:
                out = peers.run_peer(name, n, ctx.repeat, concurrency=CONCURRENCY)
            except Exception as exc:
                reason = f"run failed: {type(exc).__name__}: {str(exc)[-500:]}"
        if reason is not None:
            peers.skipped("shared", name, reason, results, rows)
            continue
        m = medians(out["runs"])
        results[name] = dict(m, version=out["version"], config=out["config"],
                             repetitions=out["runs"])
        for key, label in PHASES:
            times = gq[kind][key] / m[key] if kind in gq else None
            results[name][f"greenqueue_{kind}_{key}_ratio"] = times
            judged = key != "enqueue_per_s"   # the one-caller row is shown, not judged
            if times is None:
                target_cell = f"gq {kind}: not measured"
            elif judged:
                target_cell = f"gq {kind} ≥ {target}×: {times:.1f}×"
            else:
                target_cell = f"gq {kind}: {times:.1f}×"
            rows.append(Row("shared", f"{name} {out['version']} {label}", m[key], "/s",
                            None, target_cell, (times >= target) if judged and times else None))
    emit("shared", {"tasks": n, "repeat": ctx.repeat, "concurrency": CONCURRENCY,
                    "greenqueue": URLS,
                    "greenqueue_workers": "greenqueue run --workers 2 (100 greenlets each)",
                    "targets": {k: f"greenqueue {b} >= {t} x" for k, (b, t) in TARGETS.items()},
                    "peers_venv": peers.VENV}, results, rows=rows)
    return rows
