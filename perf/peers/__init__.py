"""The ``peers`` scenario: the same no-op tasks through Huey, RQ, Dramatiq and Celery, each
measured in the same run as greenqueue.

The peers live in their own virtualenv, ``perf/.peers-venv`` (git-ignored), made and filled by
this module on first use with ``pip``: none of them becomes a dependency of greenqueue, and no
pin of theirs can change the gevent or click that greenqueue runs with. Each peer's run code is
one small file beside this one (``huey_run.py``, ``rq_run.py``, ``dramatiq_run.py``,
``celery_run.py``, sharing the protocol in ``peer_common.py``), run with that virtualenv's
Python; greenqueue's side is ``greenqueue_run.py``, run with ours. A peer that cannot be
installed, or whose Redis cannot be reached, is reported as skipped with the reason.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from perf.context import disk_backend, in_child
from perf.report import Row, emit, medians

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(os.path.dirname(HERE), ".peers-venv")
PYTHON = os.path.join(VENV, "bin", "python")
REDIS = ("127.0.0.1", 6379)
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port",
               "6379", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]
# peer -> (pip requirements, module to import, needs Redis, target ratio greenqueue/peer)
PEERS = {
    "huey": (["huey", "gevent"], "huey", False, 20),
    "rq": (["rq", "redis"], "rq", True, 10),
    "dramatiq": (["dramatiq[redis]", "gevent"], "dramatiq", True, 10),
    "celery": (["celery[redis]", "gevent"], "celery", True, 10),
    # PostgreSQL-based: measured by the ``shared`` scenario only (perf/scenarios/shared.py),
    # with greenqueue on PostgreSQL; its completion counter is in Redis like everyone's
    "procrastinate": (["procrastinate", "gevent"], "procrastinate", True, 3),
}
SHARED_ONLY = ("procrastinate",)   # not part of the ``peers`` scenario's run


def redis_up():
    try:
        with socket.create_connection(REDIS, timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis():
    """None when Redis answers (starting it if it is down and installed), else the reason."""
    if redis_up():
        return None
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    for d in ("/var/lib/redis", "/var/log/redis"):
        os.makedirs(d, exist_ok=True)
    proc = subprocess.run(REDIS_START, capture_output=True, text=True)
    for _ in range(50):
        if redis_up():
            return None
        time.sleep(0.1)
    return f"Redis at {REDIS[0]}:{REDIS[1]} is down and would not start: {proc.stderr.strip()}"


def skipped(scenario, name, reason, results, rows):
    """Report a peer that could not be measured: in the JSON, the table and on stderr."""
    results[name] = {"skipped": reason}
    rows.append(Row(scenario, name, f"skipped: {reason[:120]}"))
    print(f"{scenario}: {name} skipped: {reason}", file=sys.stderr)


def ensure_peer(name):
    """None when the peer imports in perf/.peers-venv (installing it if needed), else why not."""
    requirements, module = PEERS[name][:2]
    return ensure_module(module, requirements)


def ensure_module(module, requirements):
    """None when ``module`` imports in perf/.peers-venv (pip-installing ``requirements`` if
    needed), else why not."""
    if not os.path.exists(PYTHON):
        made = subprocess.run([sys.executable, "-m", "venv", VENV], capture_output=True,
                              text=True)
        if made.returncode != 0:
            return f"cannot create {VENV}: {made.stderr.strip()[-300:]}"
    if _imports(module):
        return None
    pip = subprocess.run([PYTHON, "-m", "pip", "install", "-q", *requirements, "psutil"],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0 or not _imports(module):
        return f"pip install {' '.join(requirements)} failed: {pip.stderr.strip()[-300:]}"
    return None


def _imports(module):
    return subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0


def run_peer(name, n, repeat, concurrency=0):
    """The peer's run file in perf/.peers-venv; with ``concurrency`` (the shared scenario)
    under ``python -m gevent.monkey`` so that its concurrent callers are greenlets."""
    argv = [os.path.join(HERE, f"{name}_run.py"), str(n), str(repeat)]
    if concurrency:
        argv = ["-m", "gevent.monkey", *argv, str(concurrency)]
    proc = subprocess.run([PYTHON, *argv], cwd=HERE, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-1500:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx):
    """greenqueue is measured again right before each peer, and each ratio uses that adjacent
    measurement: on a shared machine the load drifts over the minutes a peer takes."""
    n = ctx.size(50_000, 1_000)
    backend = "disk" if disk_backend() else "memory"
    label = f"greenqueue ({backend} log)"

    def measure_greenqueue():
        return in_child("peers.greenqueue_run:measure", n=n, repeat=ctx.repeat, backend=backend)

    all_gq_runs = []
    results = {}
    peer_rows = []
    redis_problem = None
    for name, (_, _, needs_redis, target) in PEERS.items():
        if name in SHARED_ONLY:
            continue
        reason = ensure_peer(name)
        if reason is None and needs_redis:
            redis_problem = redis_problem or ensure_redis()
            reason = redis_problem
        if reason is None:
            try:
                gq_runs = measure_greenqueue()
                all_gq_runs += gq_runs
                out = run_peer(name, n, ctx.repeat)
            except Exception as exc:
                reason = f"run failed: {type(exc).__name__}: {str(exc)[-500:]}"
        if reason is not None:
            skipped("peers", name, reason, results, peer_rows)
            continue
        gq = medians(gq_runs)
        m = medians(out["runs"])
        results[name] = dict(m, version=out["version"], config=out["config"],
                             repetitions=out["runs"], greenqueue_adjacent=gq,
                             greenqueue_adjacent_repetitions=gq_runs)
        for phase in ("enqueue", "process"):
            key = f"{phase}_per_s"
            times = gq[key] / m[key]
            results[name][f"greenqueue_{phase}_ratio"] = times
            peer_rows.append(Row("peers", f"{name} {out['version']} {phase}", m[key], "/s",
                                 ctx.ratio(m[key], key), f"gq ≥ {target}×: {times:.1f}×",
                                 times >= target))
    if not all_gq_runs:
        all_gq_runs = measure_greenqueue()
    gq = medians(all_gq_runs)
    results["greenqueue"] = dict(gq, backend=backend, repetitions=all_gq_runs)
    rows = [Row("peers", f"{label} enqueue", gq["enqueue_per_s"], "/s",
                ctx.ratio(gq["enqueue_per_s"], "enqueue_per_s")),
            Row("peers", f"{label} process", gq["process_per_s"], "/s",
                ctx.ratio(gq["process_per_s"], "process_per_s"))] + peer_rows
    emit("peers", {"tasks": n, "repeat": ctx.repeat, "greenqueue_backend": backend,
                   "peers_venv": VENV, "redis": f"{REDIS[0]}:{REDIS[1]}/15"}, results,
         rows=rows)
    return rows
