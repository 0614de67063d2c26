"""Per-task-name counts and latency histograms, kept in plain dicts for the metrics exporter.

Duties:
- :class:`TaskFigures` counts enqueued / processed / failed / retried / dead per task name and
  files each attempt's queue wait (enqueue or due time to start) and run time into fixed
  histogram buckets. No prometheus-client object is touched per task: the exporter
  (greenqueue/contrib/prometheus.py) reads these dicts when it is scraped;
- :func:`enable` switches them on for a runtime. Off (the default) they cost the dispatcher
  one ``is None`` test per task and enqueue nothing at all (``push`` is swapped for a counting
  wrapper on the instance only when enabled), so apps that do not export metrics pay nothing;
- :func:`raw` is what the ``metrics`` control command answers: these figures plus the
  process's gauges, JSON-ready, so that one worker (or the supervisor) can sum the figures of
  every process serving a data directory.

Hub-only, like the dispatcher that feeds it.
"""
import time
from bisect import bisect_left

# Upper bounds (seconds) of the wait and run-time histograms; +Inf is implied.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 300.0)
OUTCOMES = ("processed", "failed", "retried", "dead")   # the order of a row's counts


# One row (a plain list) per task name, so that filing an attempt costs one dict lookup:
# [processed, -, retried, dead, wait bucket counts (+Inf last), wait sum, run buckets, run sum].
# Failures are retried + dead, summed when read.
_WAIT = 4
_WAIT_SUM = _WAIT + len(BUCKETS) + 1
_RUN = _WAIT_SUM + 1
_RUN_SUM = _RUN + len(BUCKETS) + 1
_ROW = _RUN_SUM + 1
_OUTCOME_INDEX = {"processed": 0, "retried": 2, "dead": 3}


class TaskFigures:
    def __init__(self):
        self.enqueued = {}          # task name -> count
        self.rows = {}              # task name -> row (see above)

    def count_enqueue(self, name):
        self.enqueued[name] = self.enqueued.get(name, 0) + 1

    def as_dict(self):
        outcomes, wait, run = {}, {}, {}
        for name, row in list(self.rows.items()):
            outcomes[name] = [row[0], row[2] + row[3], row[2], row[3]]
            wait[name] = row[_WAIT:_WAIT_SUM + 1]
            run[name] = row[_RUN:_RUN_SUM + 1]
        return {"enqueued": dict(self.enqueued), "outcomes": outcomes, "wait": wait,
                "run": run}


def enable(runtime):
    """Count per task name in ``runtime`` from now on (idempotent); returns its figures."""
    figures = getattr(runtime, "figures", None)
    if figures is not None:
        return figures
    figures = runtime.figures = TaskFigures()
    push = runtime.push
    count = figures.count_enqueue

    def counting_push(spec, *args, **kwargs):
        task_id = push(spec, *args, **kwargs)
        count(spec.name)
        return task_id
    runtime.push = counting_push
    if runtime.dispatcher is not None:
        runtime.dispatcher.figures = figures
    return figures


def measured_run(dispatcher, env, _time=time.time, _clock=time.perf_counter,
                 _bisect=bisect_left, _bounds=BUCKETS):
    """Run one attempt through ``dispatcher._run`` and file it in ``dispatcher.figures``:
    its outcome, its wait (enqueue or due time to start) and its run time. An attempt that a
    shutdown interrupted is not filed (it runs again). Kept to one function call and one dict
    lookup: this runs once per task while metrics are exported."""
    wait = _time() - (env.publish_at or env.enqueued_at)
    if wait < 0.0:  # the due time of a task promoted a hair early, or a clock step
        wait = 0.0
    started = _clock()
    outcome = dispatcher._run(env)
    run_time = _clock() - started
    if outcome is None:
        return
    rows = dispatcher.figures.rows
    row = rows.get(env.name)
    if row is None:
        row = rows[env.name] = [0] * _ROW
    row[_OUTCOME_INDEX[outcome]] += 1
    row[_WAIT + _bisect(_bounds, wait)] += 1   # le semantics: a value equal to a bound is in it
    row[_WAIT_SUM] += wait
    row[_RUN + _bisect(_bounds, run_time)] += 1
    row[_RUN_SUM] += run_time


def raw(runtime):
    """The ``metrics`` control command's answer: per-name figures, totals and gauges."""
    from .metrics import snapshot
    figures = getattr(runtime, "figures", None) or enable(runtime)
    stats = snapshot(runtime)
    tasks = figures.as_dict()
    tasks["hub_blocked"] = stats.get("hub_blocked_by") or {}   # greenqueue/hub_monitor.py
    return {"pid": stats["pid"], "tasks": tasks, "uptime": stats.get("uptime"),
            "shared": stats.get("shared"),
            "totals": {k: stats.get(k) for k in ("enqueued", "processed", "failed", "retried",
                                                 "dead")},
            "gauges": {k: stats.get(k) for k in ("ready", "delayed", "in_flight", "dead", "rss",
                                                 "log_bytes", "greenlets")}}


def answer(request=None):
    """The process side of the ``metrics`` control command."""
    from .runtime import current_runtime
    runtime = current_runtime()
    if runtime is None or not runtime.running:
        return {"error": "no greenqueue runtime is running in this process"}
    return raw(runtime)
