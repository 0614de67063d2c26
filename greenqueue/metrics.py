"""Rolling figures for ``greenqueue stats``, kept off the task hot path.

Duties:
- a ticker greenlet wakes every ``TICK`` (1/8 s): it raises ``sample_due`` so that the next
  task a worker starts records its wait (enqueue, or due time, to start) and, once a second,
  snapshots the monotonic counters and CPU time into a short ring;
- ``snapshot(runtime)`` turns those rings, the queue, the log and the process (psutil) into the
  dict that the control socket serves.

Cost per task: one attribute test in the worker loop (``if metrics.sample_due``). Sampling at
most 8 waits a second still gives hundreds of points per minute for the percentiles, and at low
rates (the ones where a single slow task matters) every task is sampled. Rates come from
counter deltas, so enqueue pays nothing at all. Bytes held by queued tasks and the oldest ready
task's age are computed on demand by walking the queue: O(queued) per stats query, none per task.

Hub-only, like the dispatcher that calls it.
"""
import gc
import os
import socket
import time
from collections import deque

import gevent

from .envelope import as_envelope
from .hub_monitor import figures as hub_figures

TICK = 0.125           # seconds between wait samples
RATE_WINDOW = 10.0     # seconds over which rates are reported
HISTORY_EVERY = 10     # seconds between points of the 10-minute history (the dashboard's chart)
WAIT_WINDOW = 60.0     # seconds over which wait percentiles are reported


class Metrics:
    def __init__(self):
        self.sample_due = False
        self.waits = deque(maxlen=int(WAIT_WINDOW / TICK) + 64)   # (wall time, wait seconds)
        self.ticks = deque(maxlen=int(RATE_WINDOW) + 2)   # (monotonic, enqueued, processed, cpu)
        self.history = deque(maxlen=61)   # (wall time, enqueued, processed + failed), 10 min
        self.counters = None
        self.started_at = None
        self.rss_at_start = None
        self._ticker = None

    def sample_wait(self, env):
        """Record how long ``env`` waited before a worker took it. Called by the dispatcher."""
        self.sample_due = False
        now = time.time()
        self.waits.append((now, now - (env.publish_at or env.enqueued_at)))

    def start(self, counters):
        self.counters = counters
        self.started_at = time.time()
        self.rss_at_start = _process().memory_info().rss
        self._tick_counters()
        self.history.append((self.started_at, counters.enqueued,
                             counters.processed + counters.failed))
        self._ticker = gevent.spawn(self._tick)

    def stop(self):
        if self._ticker is not None:
            self._ticker.kill(block=False)
            self._ticker = None

    def _tick(self):
        per_second = int(round(1 / TICK))
        n = 0
        while True:
            gevent.sleep(TICK)
            self.sample_due = True
            n += 1
            if n % per_second == 0:
                self._tick_counters()
            if n % (per_second * HISTORY_EVERY) == 0:
                c = self.counters
                self.history.append((time.time(), c.enqueued, c.processed + c.failed))

    def _tick_counters(self):
        c = self.counters
        t = os.times()
        self.ticks.append((time.monotonic(), c.enqueued, c.processed + c.failed, t.user + t.system))

    # -- reading ------------------------------------------------------------------------------

    def rates(self):
        """(enqueue/s, process/s, cpu %) over the last RATE_WINDOW seconds."""
        c = self.counters
        t = os.times()
        now = (time.monotonic(), c.enqueued, c.processed + c.failed, t.user + t.system)
        old = next((s for s in self.ticks if now[0] - s[0] <= RATE_WINDOW + 0.5), None)
        if old is None or now[0] - old[0] < 0.05:
            return 0.0, 0.0, 0.0
        span = now[0] - old[0]
        return ((now[1] - old[1]) / span, (now[2] - old[2]) / span,
                100.0 * (now[3] - old[3]) / span)

    def wait_percentiles(self):
        """(p50, p99, samples) of waits started within the last WAIT_WINDOW seconds."""
        since = time.time() - WAIT_WINDOW
        waits = sorted(w for at, w in self.waits if at >= since)
        if not waits:
            return None, None, 0
        return (_percentile(waits, 0.50), _percentile(waits, 0.99), len(waits))


def _percentile(ordered, q):
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _process():
    import psutil  # imported here: `import greenqueue` stays light
    return psutil.Process()


def queue_figures(queue, now=None):
    """Bytes of payload held by queued tasks and the age of the oldest ready one (seconds)."""
    now = time.time() if now is None else now
    held = 0
    oldest = None
    for level in list(queue.levels.values()):
        for env in level:
            held += len(env) if env.__class__ is bytes else len(env.payload)
        if level:
            head = as_envelope(level[0])   # FIFO within a level: the head waited longest
            since = head.publish_at or head.enqueued_at
            if oldest is None or since < oldest:
                oldest = since
    for entry in list(queue.delayed):
        held += len(entry[2])  # the packed envelope: payload plus a few dozen bytes
    return held, (max(0.0, now - oldest) if oldest is not None else None)


def greenlets_alive():
    from greenlet import greenlet
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)


def _schedules(runtime, light):
    scheduler = getattr(runtime, "scheduler", None)
    if light and scheduler is not None and not scheduler.leader:
        return []
    return runtime.schedules() if hasattr(runtime, "schedules") else []


def snapshot(runtime, extra=None, light=False):
    """Every figure ``greenqueue stats`` shows for this process, as a JSON-ready dict.

    ``light`` (what a process publishes to a shared backend every few seconds) leaves out the
    costly figures: USS (a read of /proc/PID/smaps) and the greenlet count (a walk of every
    object on the heap) are None, and only the schedules' leader lists them (a follower would
    read the leader's record from the server)."""
    metrics = runtime.metrics
    proc = _process()
    with proc.oneshot():
        mem, uss = None, None
        if not light:
            try:
                mem = proc.memory_full_info()
                uss = mem.uss
            except Exception:  # noqa: BLE001 - USS needs /proc/PID/smaps; report RSS regardless
                mem = None
        mem = mem or proc.memory_info()
        cpu = proc.cpu_times()
        fds = proc.num_fds()
    now = time.time()
    held, oldest = queue_figures(runtime.queue, now) if runtime.queue else (0, None)
    enqueue_rate, process_rate, cpu_percent = metrics.rates()
    p50, p99, samples = metrics.wait_percentiles()
    log_info = {}
    if runtime.log is not None and hasattr(runtime.log, "info"):
        log_info = runtime.log.info()
    figures = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "uptime": now - (metrics.started_at or now),
        "started_at": metrics.started_at,
        "rss": mem.rss,
        "uss": uss,
        "rss_growth": mem.rss - (metrics.rss_at_start or mem.rss),
        "queued_bytes": held,
        "cpu_percent": cpu_percent,
        "cpu_seconds": cpu.user + cpu.system,
        **runtime.stats(),
        "enqueue_rate": enqueue_rate,
        "process_rate": process_rate,
        "log": runtime.log.describe() if runtime.log is not None else None,
        "shared": bool(getattr(runtime.log, "shared", False)),
        "log_segments": log_info.get("segments", 0),
        "log_bytes": log_info.get("log_bytes", 0),
        "greenlets": None if light else greenlets_alive(),
        "open_fds": fds,
        "oldest_ready_age": oldest,
        "wait_p50": p50,
        "wait_p99": p99,
        "wait_samples": samples,
        "schedules": _schedules(runtime, light),
        "history": list(metrics.history),
        **hub_figures(),
    }
    figures.update(extra or {})
    return figures
