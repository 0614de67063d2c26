"""``greenqueue stats``: collect every live process's figures from a data directory and show them.

Duties:
- ``collect(data_dir)`` asks each control socket (stale ones are reported and removed), adds a
  total, and, when no process is alive, summarises the log files instead (pending, delayed and
  dead counts straight from the segments);
- on a shared backend (``collect(data_dir, backend=URL)``, or a local process that runs on
  one) the processes are those of the whole cluster, every host (the figures each publishes,
  greenqueue/cluster.py; a local one's own answer replaces its published copy), and the
  total's ready, delayed, in-flight and dead counts are the server's (``report["cluster"]``);
- ``render(report)`` lays the figures out as a table, one column per process plus the total.

Figures are the ones ``greenqueue.metrics.snapshot`` serves; see it for what each one means.
"""
import os
import socket
import time

from .control import query_all

SUMMED = ("rss", "uss", "rss_growth", "queued_bytes", "cpu_percent", "ready", "delayed",
          "in_flight", "enqueued", "processed", "failed", "retried", "dead", "interrupted",
          "enqueue_rate", "process_rate", "log_segments", "log_bytes", "greenlets", "open_fds",
          "connections", "hub_blocked")
MAXED = ("uptime", "oldest_ready_age", "wait_p50", "wait_p99")


CLUSTER_COUNTS = ("ready", "delayed", "in_flight", "dead")


def collect(data_dir, timeout=3.0, backend=None):
    """The report; ``backend`` (a shared backend's URL) shows the whole cluster on it."""
    from .cluster import view
    data_dir = os.path.abspath(data_dir)
    live, stale, unresponsive = query_all(data_dir, timeout=timeout)
    live.sort(key=lambda p: p.get("pid", 0))
    cluster = None
    shared = [p["pid"] for p in live if p.get("shared")]
    if backend or shared:
        cluster = view(data_dir, backend, pids=shared, timeout=timeout)
    processes = live if cluster is None else _whole_cluster(live, cluster)
    report = {
        "data_dir": data_dir,
        "time": time.time(),
        "processes": processes,
        "total": total(processes, cluster) if processes or cluster else None,
        "stale": stale,
        "unresponsive": unresponsive,
        "log": None,
        "cluster": None if cluster is None else dict(
            {k: v for k, v in cluster.items() if k != "processes"},
            processes=len(cluster["processes"])),
    }
    if not processes and cluster is None:
        report["log"] = summarize_log(data_dir)
    return report


def _whole_cluster(live, cluster):
    """Every published process, a local one's full answer in place of its published copy;
    plus local processes on the same backend that have not published yet."""
    here = socket.gethostname()
    local = {p.get("pid"): p for p in live}
    out = []
    for published in cluster["processes"]:
        mine = local.pop(published.get("pid"), None) if published.get("host") == here else None
        out.append(dict(mine, owner=published.get("owner")) if mine else published)
    out += [p for p in local.values() if p.get("log") == cluster.get("backend")]
    return out


def total(processes, cluster=None):
    """Sums of counts, bytes and rates; the worst (largest) ages and waits. With ``cluster``
    (a shared backend), the queue's counts are the server's: a process holds only what it
    claimed, and each one sees the same dead set."""
    out = {"processes": len(processes)}
    for key in SUMMED:
        values = [p[key] for p in processes if p.get(key) is not None]
        out[key] = sum(values) if values else None
    for key in MAXED:
        values = [p[key] for p in processes if p.get(key) is not None]
        out[key] = max(values) if values else None
    if cluster is not None:
        out.update({key: cluster.get(key) for key in CLUSTER_COUNTS})
        if cluster.get("oldest_ready_age") is not None:
            out["oldest_ready_age"] = cluster["oldest_ready_age"]
    return out


def summarize_log(data_dir):
    """What the disk log in ``data_dir`` holds, read from its files (no process needed)."""
    if not os.path.isdir(data_dir):
        return {"error": f"no data directory at {data_dir}"}
    try:
        from .log.inspect import summarize
    except ImportError:
        summarize = None
    if summarize is not None:
        try:
            summary = dict(summarize(data_dir))
        except Exception as exc:  # noqa: BLE001 - a damaged log must not break stats
            return {"error": f"cannot read the log: {type(exc).__name__}: {exc}"}
        if isinstance(summary.get("segments"), list):
            summary["segments"] = len(summary["segments"])
        return summary
    segments = [n for n in os.listdir(data_dir) if n.endswith(".wal")]
    return {"segments": len(segments),
            "bytes": sum(os.path.getsize(os.path.join(data_dir, n)) for n in segments),
            "error": "this greenqueue cannot count the log's tasks offline"}


# -- rendering ---------------------------------------------------------------------------------

def _bytes(n):
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _seconds(s):
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f}m{s % 60:02.0f}s"
    return f"{s / 3600:.0f}h{s % 3600 / 60:02.0f}m"


def _num(n):
    return "-" if n is None else f"{n:,}"


def _rate(r):
    return "-" if r is None else f"{r:,.1f}/s"


ROWS = [
    ("pid", "pid", str),
    ("role", "role", str),
    ("uptime", "uptime", _seconds),
    ("memory RSS", "rss", _bytes),
    ("memory USS", "uss", _bytes),
    ("RSS growth since start", "rss_growth", _bytes),
    ("bytes held by queued tasks", "queued_bytes", _bytes),
    ("CPU (last 10 s)", "cpu_percent", lambda v: f"{v:.1f} %"),
    ("ready", "ready", _num),
    ("delayed", "delayed", _num),
    ("in flight", "in_flight", _num),
    ("processed", "processed", _num),
    ("failed", "failed", _num),
    ("retried", "retried", _num),
    ("dead", "dead", _num),
    ("enqueue rate (10 s)", "enqueue_rate", _rate),
    ("process rate (10 s)", "process_rate", _rate),
    ("log segments", "log_segments", _num),
    ("log bytes", "log_bytes", _bytes),
    ("greenlets alive", "greenlets", _num),
    ("open fds", "open_fds", _num),
    ("oldest ready task age", "oldest_ready_age", _seconds),
    ("wait p50 (1 min)", "wait_p50", _seconds),
    ("wait p99 (1 min)", "wait_p99", _seconds),
    ("hub blocked (times)", "hub_blocked", _num),
]


def render(report):
    cluster = report.get("cluster")
    lines = [f"greenqueue stats for {cluster['backend'] if cluster else report['data_dir']}  "
             f"({time.strftime('%H:%M:%S', time.localtime(report['time']))})"]
    processes = report["processes"]
    if cluster:
        lines.append(cluster_line(cluster))
    if processes:
        columns = processes + ([dict(report["total"], pid="total", role="", host="")]
                               if len(processes) > 1 else [])
        rows = ROWS[:1] + [("host", "host", str)] + ROWS[1:] if cluster else ROWS
        cells = [[label] + [_cell(fmt, p.get(key)) for p in columns] for label, key, fmt in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        for row in cells:
            lines.append("  ".join([row[0].ljust(widths[0])] +
                                   [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        if len(processes) > 1:
            lines.append("(total: sums; uptime, ages and waits are the largest of any process"
                         + ("; ready, delayed, in flight and dead are the server's)" if cluster
                            else ")"))
        lines.extend(_hub_blockers(processes))
    elif cluster:
        lines.append("no live process publishes its figures on this backend")
    else:
        lines.append("no live greenqueue process in this data directory")
        log = report.get("log") or {}
        if "pending" in log:
            lines.append(f"from the log: {_num(log.get('pending'))} pending, "
                         f"{_num(log.get('delayed'))} delayed, {_num(log.get('dead'))} dead "
                         f"({_num(log.get('segments'))} segment(s), {_bytes(log.get('bytes'))})")
        elif "segments" in log:
            lines.append(f"log: {_num(log['segments'])} segment(s), {_bytes(log.get('bytes'))}")
        if log.get("error"):
            lines.append(log["error"])
    lines += _render_schedules(processes)
    if report["stale"]:
        lines.append(f"removed stale control socket(s) of dead process(es): "
                     f"{', '.join(map(str, report['stale']))}")
    if report["unresponsive"]:
        lines.append(f"no answer in time from: {', '.join(map(str, report['unresponsive']))}")
    return "\n".join(lines)


def cluster_line(cluster):
    """One line: the server's counts for the whole cluster."""
    oldest = cluster.get("oldest_ready_age")
    return (f"cluster: {_num(cluster.get('processes'))} live process(es); the server holds "
            f"{_num(cluster.get('ready'))} ready, {_num(cluster.get('delayed'))} delayed, "
            f"{_num(cluster.get('in_flight'))} in flight (claimed), "
            f"{_num(cluster.get('dead'))} dead"
            + (f"; oldest ready task {_seconds(oldest)}" if oldest is not None else ""))


def _render_schedules(processes):
    """One line per periodic schedule, as the leader (the process that runs them) sees it."""
    seen = {}
    for proc in processes:
        for sched in proc.get("schedules") or []:
            if sched.get("leader") or sched["name"] not in seen:
                seen[sched["name"]] = dict(sched, pid=proc.get("pid"))
    if not seen:
        return []
    lines = ["schedules:"]
    for sched in seen.values():
        when = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"  # noqa: E731
        lines.append(f"  {sched['name']}  {sched.get('schedule', '')}  next {when(sched.get('next_run'))}"
                     f"  last {when(sched.get('last_run'))} ({sched.get('last_outcome') or '-'})"
                     f"{'  leader pid ' + str(sched['pid']) if sched.get('leader') else ''}")
    return lines


def _hub_blockers(processes):
    """One line per task that held a process's hub past --max-blocking-ms (hub_monitor.py)."""
    lines = []
    for p in processes:
        last = p.get("hub_blocked_last") or {}
        for name, n in sorted((p.get("hub_blocked_by") or {}).items()):
            latest = f", last task {last['id']}" if last.get("task") == name and last.get("id") \
                else ""
            lines.append(f"pid {p.get('pid')}: {name} blocked the hub for more than "
                         f"{p.get('max_blocking_ms') or 0:.0f} ms {n} time(s){latest}")
    return lines


def _cell(fmt, value):
    if value is None:
        return "-"
    try:
        return fmt(value)
    except (TypeError, ValueError):
        return str(value)
