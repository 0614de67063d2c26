"""delayed: tasks delayed by one hour, held in memory and in the log.

small (the seed's benchmark, 10 000 tasks): time to enqueue them, RSS growth of the process
(psutil, after a full collection), bytes on disk in the data directory. Targets <= 50 ms,
<= 10 MB, <= 1 MB.

large (1 000 000 tasks; 100 000 in quick mode): RSS growth, the log rotations that happened
(their count and the longest, as the disk log reports them) and the worst hub stall seen by
a ticker greenlet that sleeps 1 ms in a loop and records the longest gap beyond that. The
tasks are enqueued in batches of 100 with a ``gevent.idle()`` between batches, as requests
of a web app would (about 0.5 ms each), so a stall above that comes from the runtime (its
rotation, its garbage), not from the benchmark's own loop. (``gevent.sleep(0)`` is not used:
a greenlet that loops on it keeps the hub's callback queue non-empty and starves timers,
which showed up as a 25 ms "stall" every 25 ms that no runtime work caused.) After the last batch it keeps ticking for two fsync intervals so a
rotation the last tasks trigger is measured too. Targets <= 300 MB, <= 5 ms.
Each repetition runs in a fresh interpreter so RSS growth is not hidden by a previous run's
freed memory.
"""
import gc
import logging
import os
import shutil
import tempfile
import time

import gevent
import psutil

from perf.context import NO_DISK_LOG, disk_backend, in_child
from perf.report import Row, emit, medians, skipped

BATCH = 100
HOUR = 3600


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


class Rotations(logging.Handler):
    """Collects the disk log's "rotated the log ... in S s" records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds = []
        self.tasks = []

    def emit(self, record):
        if record.getMessage().startswith("rotated the log"):
            self.tasks.append(record.args[1])
            self.seconds.append(record.args[-1])


class Ticker:
    """A greenlet that measures how late the hub wakes it: the worst stall of the hub."""

    def __init__(self, interval=0.001):
        self.interval, self.worst, self.running = interval, 0.0, True
        self.greenlet = gevent.spawn(self._tick)

    def _tick(self):
        clock = time.perf_counter
        while self.running:
            before = clock()
            gevent.sleep(self.interval)
            self.worst = max(self.worst, clock() - before - self.interval)

    def stop(self):
        self.running = False
        self.greenlet.join()


def measure(n, large):
    import greenqueue
    from perf import noop_tasks
    tmp = tempfile.mkdtemp(prefix="gq-delayed-")
    proc = psutil.Process()
    rotations = Rotations()
    disk_logger = logging.getLogger("greenqueue.log.disk")
    disk_logger.addHandler(rotations)
    disk_logger.setLevel(logging.INFO)
    try:
        with greenqueue.Runtime(backend="disk", path=tmp) as rt:
            enqueue = noop_tasks.noop.enqueue
            gc.collect()
            rss = proc.memory_info().rss
            result = {}
            if not large:
                start = time.perf_counter()
                for i in range(n):
                    enqueue(i, delay=HOUR)
                result["enqueue_ms"] = (time.perf_counter() - start) * 1000
            else:
                ticker = Ticker()
                start = time.perf_counter()
                for first in range(0, n, BATCH):
                    for i in range(first, min(first + BATCH, n)):
                        enqueue(i, delay=HOUR)
                    gevent.idle()
                result["enqueue_s"] = time.perf_counter() - start
                gevent.sleep(2 * rt.fsync_interval + 0.1)
                ticker.stop()
                result["worst_stall_ms"] = ticker.worst * 1000
                result["rotations"] = len(rotations.seconds)
                result["longest_rotation_s"] = max(rotations.seconds, default=0.0)
                result["largest_rotation_tasks"] = max(rotations.tasks, default=0)
            gc.collect()
            result["rss_growth_mb"] = (proc.memory_info().rss - rss) / 2**20
            result["log_bytes"] = _dir_bytes(tmp)
            if rt.stats()["delayed"] != n:
                raise RuntimeError(f"{rt.stats()['delayed']} of {n} tasks delayed")
            rt.stop(timeout=1)
    finally:
        disk_logger.removeHandler(rotations)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run(ctx):
    small = ctx.size(10_000, 10_000)
    large = ctx.size(1_000_000, 100_000)
    params = {"small_tasks": small, "large_tasks": large, "repeat": ctx.repeat,
              "delay_s": HOUR, "batch": BATCH, "backend": "disk"}
    if not disk_backend():
        return skipped("delayed", params, NO_DISK_LOG)
    small_runs = [in_child("scenarios.delayed:measure", n=small, large=False)
                  for _ in range(ctx.repeat)]
    large_runs = [in_child("scenarios.delayed:measure", n=large, large=True, timeout=1200)
                  for _ in range(ctx.repeat)]
    s, g = medians(small_runs), medians(large_runs)
    scale = large / 1_000_000
    rows = [Row("delayed", f"{small:,} × 1 h: enqueue time", s["enqueue_ms"], "ms",
                ctx.ratio(small / s["enqueue_ms"] * 1000, "enqueue_per_s"), "<= 50 ms",
                s["enqueue_ms"] <= 50),
            Row("delayed", f"{small:,} × 1 h: RSS growth", s["rss_growth_mb"], "MB", None,
                "<= 10 MB", s["rss_growth_mb"] <= 10),
            Row("delayed", f"{small:,} × 1 h: log size", s["log_bytes"] / 2**20, "MB", None,
                "<= 1 MB", s["log_bytes"] <= 2**20),
            Row("delayed", f"{large:,} × 1 h: RSS growth", g["rss_growth_mb"], "MB", None,
                "<= 300 MB" if scale == 1 else f"<= {300 * scale:.0f} MB (pro rata)",
                g["rss_growth_mb"] <= 300 * scale),
            Row("delayed", f"{large:,} × 1 h: enqueue rate (batches)", large / g["enqueue_s"],
                "/s", ctx.ratio(large / g["enqueue_s"], "enqueue_per_s")),
            Row("delayed", f"{large:,}: longest rotation", g["longest_rotation_s"], "s", None,
                f"({g['rotations']:.0f} rotations)"),
            Row("delayed", f"{large:,}: worst hub stall", g["worst_stall_ms"], "ms", None,
                "<= 5 ms", g["worst_stall_ms"] <= 5)]
    emit("delayed", params, {"small": s, "large": g},
         {"small": small_runs, "large": large_runs}, rows)
    return rows
