"""throughput (the seed's headline): no-op tasks enqueued from one greenlet, then processed,
on the disk log with its default fsync interval (0.5 s) and segment size.

Each repetition runs in a fresh interpreter on a fresh data directory. Enqueue never yields,
so the workers start only once every task is logged: enqueue/s and process/s are two clean
phases, end-to-end is both. Log bytes per task counts every byte the process wrote
(``write_chars``: add, begin and remove records, fsync'd or not) divided by the task count.
Targets (issue 6): enqueue >= 0.5 x limit, process >= 0.4 x limit.
"""
import shutil
import tempfile

import psutil

from perf.context import NO_DISK_LOG, disk_backend, in_child
from perf.report import Row, emit, medians, skipped


def measure(n, backend="disk"):
    import greenqueue
    from perf import noop_tasks
    tmp = tempfile.mkdtemp(prefix="gq-throughput-")
    proc = psutil.Process()
    try:
        with greenqueue.Runtime(backend=backend, path=tmp) as rt:
            written = proc.io_counters().write_chars
            result = noop_tasks.enqueue_and_drain(rt, n)
        result["log_bytes_per_task"] = (proc.io_counters().write_chars - written) / n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run(ctx):
    n = ctx.size(500_000, 100_000)
    if not disk_backend():
        return skipped("throughput", {"tasks": n}, NO_DISK_LOG)
    runs = [in_child("scenarios.throughput:measure", n=n) for _ in range(ctx.repeat)]
    m = medians(runs)
    enq = ctx.ratio(m["enqueue_per_s"], "enqueue_per_s")
    pro = ctx.ratio(m["process_per_s"], "process_per_s")
    rows = [Row("throughput", f"enqueue ({n:,} tasks, disk)", m["enqueue_per_s"], "/s", enq,
                ">= 0.5× limit", enq is not None and enq >= 0.5),
            Row("throughput", "process", m["process_per_s"], "/s", pro, ">= 0.4× limit",
                pro is not None and pro >= 0.4),
            Row("throughput", "end to end", m["end_to_end_per_s"], "/s",
                ctx.ratio(m["end_to_end_per_s"], "end_to_end_per_s")),
            Row("throughput", "log bytes written per task", m["log_bytes_per_task"], "B",
                ctx.ratio(m["log_bytes_per_task"], "log_bytes_per_task"))]
    emit("throughput", {"tasks": n, "repeat": ctx.repeat, "backend": "disk",
                        "fsync_interval": 0.5, "segment_size": 2 * 1024 * 1024,
                        "concurrency": 100}, m, runs, rows)
    return rows
