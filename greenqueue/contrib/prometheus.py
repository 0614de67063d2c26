"""Prometheus metrics for greenqueue: ``greenqueue run --metrics``, or your own server.

Duties:
- :func:`render` scrapes: it asks every process serving a data directory for its figures (the
  ``metrics`` control command, see greenqueue/task_figures.py), sums them, and writes them in
  Prometheus' text format with prometheus-client. Summing at scrape time is what makes the
  figures the whole server's with ``--workers N``, whichever worker (or the supervisor)
  answers; the processes themselves only count in plain dicts;
- :class:`MetricsMiddleware` answers ``/metrics`` (configurable) before the app;
  :func:`make_wsgi_app` is the bare endpoint and :func:`serve` runs it on its own address;
- on a shared backend (Redis, PostgreSQL) a scrape also reads the server's counts for the
  whole cluster (every host) into the ``greenqueue_cluster_*`` gauges: each process reports
  the same value, so aggregate them with ``max``, not ``sum``; the counters stay per process
  and Prometheus sums those over the processes it scrapes;
- :func:`enable` switches per-task-name counting on in a runtime; call it once the runtime
  runs (``greenqueue run`` does; with gunicorn, in ``post_worker_init`` after the greenqueue
  hooks), or the first scrape does it and the per-name counts start there.

For gunicorn or an app's own server::

    from greenqueue.contrib.prometheus import MetricsMiddleware
    application = MetricsMiddleware(application, data_dir="greenqueue-data")
"""
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from ..cluster import view
from ..control import query_all
from ..errors import GreenqueueError
from ..runtime import current_runtime
from ..task_figures import BUCKETS, OUTCOMES, enable as _enable, raw

__all__ = ["MetricsMiddleware", "enable", "gather", "make_wsgi_app", "render", "serve"]
COUNTERS = ("enqueued",) + OUTCOMES
GAUGES = {
    "ready": ("greenqueue_ready_tasks", "Tasks due and waiting for a worker."),
    "delayed": ("greenqueue_delayed_tasks", "Tasks waiting for their due time."),
    "in_flight": ("greenqueue_in_flight_tasks", "Tasks running now."),
    "dead": ("greenqueue_dead_tasks", "Tasks in the dead set."),
    "rss": ("greenqueue_resident_memory_bytes", "Resident memory of the processes."),
    "log_bytes": ("greenqueue_log_bytes", "Bytes of the task log's segments."),
    "greenlets": ("greenqueue_greenlets", "Greenlets alive in the processes."),
}
CLUSTER_GAUGES = {
    "ready": ("greenqueue_cluster_ready_tasks",
              "Tasks due and waiting on the shared backend, whole cluster."),
    "delayed": ("greenqueue_cluster_delayed_tasks",
                "Tasks waiting for their due time on the shared backend, whole cluster."),
    "in_flight": ("greenqueue_cluster_in_flight_tasks",
                  "Tasks claimed by a process of the cluster (running or about to)."),
    "dead": ("greenqueue_cluster_dead_tasks", "Tasks in the cluster's dead set."),
    "processes": ("greenqueue_cluster_processes",
                  "Live processes of every host sharing the backend."),
}


def enable(runtime=None):
    """Count per task name in ``runtime`` (default: the running one); None if none runs."""
    runtime = runtime or current_runtime()
    return _enable(runtime) if runtime is not None else None


def gather(data_dir, timeout=5.0):
    """The raw figures of every process serving ``data_dir`` (this one included, even when it
    has no control socket)."""
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), timeout=timeout,
                                               cmd="metrics")
    answers = [a for a in answers if "tasks" in a]
    runtime = current_runtime()
    if runtime is not None and runtime.running and \
            os.getpid() not in {a.get("pid") for a in answers}:
        answers.append(raw(runtime))
    return answers


def merge(answers):
    """Sum the figures of many processes (per task name, bucket by bucket)."""
    out = {"processes": len(answers), "counters": {k: {} for k in COUNTERS},
           "wait": {}, "run": {}, "gauges": {k: 0 for k in GAUGES}, "hub_blocked": {}}
    for answer in answers:
        tasks = answer["tasks"]
        _add(out["counters"]["enqueued"], tasks.get("enqueued", {}))
        for name, counts in tasks.get("outcomes", {}).items():
            for outcome, n in zip(OUTCOMES, counts):
                _add(out["counters"][outcome], {name: n})
        for kind in ("wait", "run"):
            for name, histogram in tasks.get(kind, {}).items():
                into = out[kind].setdefault(name, [0] * len(histogram))
                for i, n in enumerate(histogram):
                    into[i] += n
        _add(out["hub_blocked"], tasks.get("hub_blocked", {}))
        for key, value in (answer.get("gauges") or {}).items():
            if key in out["gauges"] and value is not None:
                out["gauges"][key] += value
    return out


def _add(into, counts):
    for name, n in counts.items():
        into[name] = into.get(name, 0) + n


def cluster(data_dir, answers, timeout=5.0):
    """The server's counts on a shared backend, or None (a local log, or the server is away:
    the scrape still answers with the per-process figures)."""
    try:
        found = view(os.path.abspath(data_dir), pids=[a["pid"] for a in answers
                                                      if a.get("shared")], timeout=timeout)
    except GreenqueueError:
        return None
    if found is None:
        return None
    return dict({k: found.get(k) for k in CLUSTER_GAUGES}, processes=len(found["processes"]))


class _Collector:
    def __init__(self, merged, cluster=None):
        self.merged = merged
        self.cluster = cluster

    def collect(self):
        m = self.merged
        for kind in COUNTERS:
            family = CounterMetricFamily(f"greenqueue_{kind}", f"Tasks {kind}, by task name.",
                                         labels=["task"])
            for name, n in sorted(m["counters"][kind].items()):
                family.add_metric([name], n)
            yield family
        for kind, doc in (("wait", "Seconds from enqueue (or due time) to the attempt's start."),
                          ("run", "Seconds an attempt ran.")):
            family = HistogramMetricFamily(
                f"greenqueue_{'queue_wait' if kind == 'wait' else 'run'}_seconds", doc,
                labels=["task"])
            for name, histogram in sorted(m[kind].items()):
                cumulative, buckets = 0, []
                for bound, n in zip(BUCKETS + (float("inf"),), histogram[:-1]):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric([name], buckets, histogram[-1])
            yield family
        blocked = CounterMetricFamily("greenqueue_hub_blocked",
                                      "Times a task held the gevent hub past the threshold.",
                                      labels=["task"])
        for name, n in sorted(m["hub_blocked"].items()):
            blocked.add_metric([name], n)
        yield blocked
        for key, (metric, doc) in GAUGES.items():
            yield GaugeMetricFamily(metric, doc, value=m["gauges"][key])
        yield GaugeMetricFamily("greenqueue_processes", "Processes whose figures are summed.",
                                value=m["processes"])
        for key, (metric, doc) in CLUSTER_GAUGES.items():
            if self.cluster is not None and self.cluster.get(key) is not None:
                yield GaugeMetricFamily(metric, doc, value=self.cluster[key])


def render(data_dir):
    """The Prometheus text exposition of the whole server on ``data_dir``."""
    registry = CollectorRegistry(auto_describe=False)
    answers = gather(data_dir)
    registry.register(_Collector(merge(answers), cluster(data_dir, answers)))
    return generate_latest(registry)


def make_wsgi_app(data_dir="greenqueue-data"):
    """A WSGI app that answers every request with the metrics of ``data_dir``'s processes."""
    def metrics_app(environ, start_response):
        enable()
        body = render(data_dir)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return metrics_app


class MetricsMiddleware:
    """Answer ``path`` with the metrics; pass every other request to ``app``."""

    def __init__(self, app, data_dir="greenqueue-data", path="/metrics"):
        self.app = app
        self.path = path
        self.metrics_app = make_wsgi_app(data_dir)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == self.path:
            return self.metrics_app(environ, start_response)
        return self.app(environ, start_response)


def serve(bind, data_dir="greenqueue-data"):
    """Serve the metrics on ``bind`` ("HOST:PORT", port 0 for any) in a greenlet; returns the
    started gevent server (its ``socket`` tells the port)."""
    from gevent.pywsgi import WSGIServer
    from ..boot import listen
    server = WSGIServer(listen(bind), make_wsgi_app(data_dir), log=None)
    server.start()
    return server
