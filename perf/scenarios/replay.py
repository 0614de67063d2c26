"""replay: start-up time on a disk log holding 1 000 000 pending task records.

One fresh process enqueues the tasks and stops before any runs (enqueue never yields; a
stopping dispatcher takes no task), leaving every record pending. Then, per repetition, a fresh
process times ``Runtime(backend="disk", path=...).start()`` on that directory: adopting the
dead owner's segments, scanning and CRC-checking every record, rebuilding the envelopes and
queueing them. It stops again before running anything, so every repetition replays the same
log. Target (issue 4/6): <= 2 s.
"""
import os
import shutil
import tempfile
import time

from perf.context import NO_DISK_LOG, disk_backend, in_child
from perf.report import Row, emit, medians, skipped


def fill(path, n):
    import greenqueue
    from perf import noop_tasks
    rt = greenqueue.Runtime(backend="disk", path=path).start()
    enqueue = noop_tasks.noop.enqueue
    for i in range(n):
        enqueue(i)
    rt.stop(timeout=5)
    return {"log_bytes": sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))}


def start_up(path, n):
    import greenqueue
    rt = greenqueue.Runtime(backend="disk", path=path)
    start = time.perf_counter()
    rt.start()
    started = time.perf_counter()
    ready = rt.stats()["ready"]
    rt.stop(timeout=5)
    if ready != n:
        raise RuntimeError(f"replayed {ready} of {n} pending tasks")
    return {"start_s": started - start, "records_per_s": n / (started - start)}


def run(ctx):
    n = ctx.size(1_000_000, 200_000)
    if not disk_backend():
        return skipped("replay", {"tasks": n}, NO_DISK_LOG)
    tmp = tempfile.mkdtemp(prefix="gq-replay-")
    try:
        filled = in_child("scenarios.replay:fill", path=tmp, n=n)
        runs = [in_child("scenarios.replay:start_up", path=tmp, n=n) for _ in range(ctx.repeat)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = medians(runs)
    m["log_bytes"] = filled["log_bytes"]
    rows = [Row("replay", f"start-up on {n:,} pending records", m["start_s"], "s", None,
                "<= 2 s" if n >= 1_000_000 else f"<= {2 * n / 1e6:.2g} s (2 s pro rata)",
                m["start_s"] <= 2 * n / 1_000_000),
            Row("replay", "records replayed per second", m["records_per_s"], "/s")]
    emit("replay", {"tasks": n, "repeat": ctx.repeat, "backend": "disk"}, m, runs, rows)
    return rows
