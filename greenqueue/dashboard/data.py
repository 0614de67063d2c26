"""What the dashboard shows, gathered from the processes of a data directory (or its log).

Duties:
- ``overview``: ``greenqueue stats``' figures per process and in total, plus the throughput of
  the last 10 minutes summed over the processes (from each one's ``history``). On a shared
  backend these are every process of the cluster, whichever host (greenqueue/cluster.py),
  with the server's counts;
- ``tasks``: per task name, counts and p50/p99 of wait and run time, estimated from the
  Prometheus-style histograms of greenqueue/task_figures.py (the upper bound of the bucket
  the percentile falls in);
- ``delayed``: delayed tasks, next due first, one page at a time: each process answers the
  ``delayed`` control command (``answer_delayed``, process side) with its first
  ``offset + limit`` entries and the pages are merged here;
- ``dead`` / ``retry`` / ``purge``: the dead set through the control sockets, or on the log with
  no live process (greenqueue/deadset.py).
"""
import heapq
import os

from ..control import query_all
from ..deadset import OfflineDeadSet
from ..envelope import unpack
from ..stats import collect
from ..task_figures import BUCKETS

PAGE = 50


def overview(data_dir):
    report = collect(data_dir)
    points = {}
    for process in report["processes"]:
        history = process.get("history") or []
        for (t0, _e0, p0), (t1, _e1, p1) in zip(history, history[1:]):
            slot = int(t1 // 10) * 10
            points[slot] = points.get(slot, 0.0) + (p1 - p0) / max(t1 - t0, 1e-6)
    report["throughput"] = sorted(points.items())
    return report


def _percentile(histogram, q):
    count = sum(histogram[:-1])
    if not count:
        return None
    seen = 0
    for bound, n in zip(BUCKETS + (float("inf"),), histogram[:-1]):
        seen += n
        if seen >= q * count:
            return bound
    return float("inf")


def tasks(data_dir):
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), cmd="metrics")
    rows = {}
    for answer in answers:
        figures = answer.get("tasks") or {}
        uptime = answer.get("uptime") or 0
        for name, n in figures.get("enqueued", {}).items():
            rows.setdefault(name, _row())["enqueued"] += n
        for name, counts in figures.get("outcomes", {}).items():
            row = rows.setdefault(name, _row())
            for key, n in zip(("processed", "failed", "retried", "dead"), counts):
                row[key] += n
            row["uptime"] = max(row["uptime"], uptime)
        for kind in ("wait", "run"):
            for name, histogram in figures.get(kind, {}).items():
                row = rows.setdefault(name, _row())
                into = row[kind] or [0] * len(histogram)
                row[kind] = [a + b for a, b in zip(into, histogram)]
    out = []
    for name, row in sorted(rows.items()):
        done = row["processed"] + row["failed"]
        out.append({"task": name, **{k: row[k] for k in ("enqueued", "processed", "failed",
                                                          "retried", "dead")},
                    "rate": done / row["uptime"] if row["uptime"] else None,
                    "wait_p50": _percentile(row["wait"], 0.5) if row["wait"] else None,
                    "wait_p99": _percentile(row["wait"], 0.99) if row["wait"] else None,
                    "run_p50": _percentile(row["run"], 0.5) if row["run"] else None,
                    "run_p99": _percentile(row["run"], 0.99) if row["run"] else None})
    return out


def _row():
    return {"enqueued": 0, "processed": 0, "failed": 0, "retried": 0, "dead": 0, "uptime": 0,
            "wait": None, "run": None}


def answer_delayed(request):
    """Process side of the ``delayed`` control command: the first ``limit`` delayed tasks."""
    from ..runtime import current_runtime
    runtime = current_runtime()
    if runtime is None or runtime.queue is None:
        return {"error": "no greenqueue runtime is running in this process"}
    limit = max(0, min(int(request.get("limit", PAGE)), 10000))
    if getattr(runtime.log, "shared", False):  # the cluster's, on the server
        total, envs = runtime.log.delayed(limit)
        return {"total": total, "shared": True, "delayed": [_describe(env) for env in envs]}
    first = heapq.nsmallest(limit, list(runtime.queue.delayed))
    return {"total": len(runtime.queue.delayed),
            "delayed": [_describe(unpack(packed)) for _due, _seq, packed in first]}


def _describe(env):
    return {"id": env.id, "task": env.name, "due": env.publish_at, "priority": env.priority,
            "attempt": env.attempt}


def delayed(data_dir, page=0):
    """(one page of delayed tasks, next due first; the total over every process)."""
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), cmd="delayed",
                                               limit=(page + 1) * PAGE)
    shared = [a for a in answers if a.get("shared")][:1]  # every one of them: the same list
    answers = [a for a in answers if not a.get("shared")] + shared
    total = sum(a.get("total", 0) for a in answers)
    merged = heapq.merge(*[a.get("delayed", []) for a in answers], key=lambda d: d["due"])
    return list(merged)[page * PAGE:(page + 1) * PAGE], total


def dead(data_dir):
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), cmd="dead_list")
    if not answers:
        return _offline(data_dir).list() if os.path.isdir(data_dir) else []
    merged = {}
    for answer in answers:
        for item in answer.get("dead", []):
            merged.setdefault(item["id"], item)
    return sorted(merged.values(), key=lambda d: d.get("failed_at") or 0)


def show(data_dir, task_id):
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), cmd="dead_show",
                                               id=task_id)
    if not answers:
        return _offline(data_dir).show(task_id)
    return next((a["task"] for a in answers if a.get("task")), None)


def change(data_dir, cmd, task_id):
    """Retry ("dead_retry") or purge ("dead_purge") one dead task; True if it was dead."""
    answers, _stale, _unresponsive = query_all(os.path.abspath(data_dir), cmd=cmd,
                                               ids=[task_id], timeout=30.0)
    if answers:
        key = "retried" if cmd == "dead_retry" else "purged"
        return any(task_id in a.get(key, []) for a in answers)
    offline = _offline(data_dir)
    with offline.owned():
        done = offline.retry([task_id]) if cmd == "dead_retry" else offline.purge([task_id])
    return bool(done)


def _offline(data_dir):
    return OfflineDeadSet(data_dir, os.environ.get("GREENQUEUE_SECRET") or None)
