"""The physical limit: the bare loop with no framework, doing the work every durable in-process
queue must do per task, and nothing else.

Enqueue: pickle the call, frame an add record (length, kind, id, due time, priority, attempt,
payload) with its CRC32, ``os.write`` it to a log file, push on a heap.
Process: pop, unpickle, call the function, frame a remove record with its CRC32, ``os.write`` it.

No fsync (greenqueue batches fsync off the hub, so it is not on the per-task path either).
Every other figure of the harness is also printed as a ratio to this one, measured in the same
run, so the ratios travel between machines better than the absolute numbers do.
"""
import heapq
import os
import pickle
import shutil
import struct
import tempfile
import time
import zlib

from perf import noop_tasks
from perf.report import Row, emit, medians

ADD = struct.Struct("<IBQdiH")      # length, kind, id, publish_at, priority, attempt
REMOVE = struct.Struct("<IBQ")      # length, kind, id
CRC = struct.Struct("<I")


def bare_loop(n, directory=None):
    """Return timings of ``n`` tasks through the bare loop: enqueue, process, end to end."""
    tmp = tempfile.mkdtemp(prefix="gq-limit-", dir=directory)
    fd = os.open(os.path.join(tmp, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    dumps, loads, crc32, write = pickle.dumps, pickle.loads, zlib.crc32, os.write
    add_pack, remove_pack, crc_pack = ADD.pack, REMOVE.pack, CRC.pack
    push, pop = heapq.heappush, heapq.heappop
    call = noop_tasks.noop.fn
    heap = []
    try:
        start = time.perf_counter()
        for i in range(n):
            payload = dumps((None, (i,), {}, None), 5)
            record = add_pack(ADD.size + len(payload), 1, i, 0.0, 0, 0) + payload
            write(fd, record + crc_pack(crc32(record)))
            push(heap, (0, i, payload))
        enqueued = time.perf_counter()
        while heap:
            _, task_id, payload = pop(heap)
            _, args, kwargs, _ = loads(payload)
            call(*args, **kwargs)
            record = remove_pack(REMOVE.size, 2, task_id)
            write(fd, record + crc_pack(crc32(record)))
        end = time.perf_counter()
        log_bytes = os.fstat(fd).st_size
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"enqueue_per_s": n / (enqueued - start), "process_per_s": n / (end - enqueued),
            "end_to_end_per_s": n / (end - start), "log_bytes_per_task": log_bytes / n}


def run(ctx):
    n = ctx.size(500_000, 100_000)
    runs = [bare_loop(n) for _ in range(ctx.repeat)]
    result = medians(runs)
    ctx.limit = result
    ctx.limit_runs = (n, runs)
    rows = [Row("limit", "enqueue (pickle+crc+write+push)", result["enqueue_per_s"], "/s"),
            Row("limit", "process (pop+unpickle+call+write)", result["process_per_s"], "/s"),
            Row("limit", "end to end", result["end_to_end_per_s"], "/s"),
            Row("limit", "log bytes per task", result["log_bytes_per_task"], "B")]
    emit("limit", {"tasks": n, "repeat": ctx.repeat, "fsync": "none"}, result, runs, rows)
    return rows


def recheck(ctx):
    """Measure the limit again at the end of a run: how much the machine drifted meanwhile
    (other processes, thermal state). Ratios stay relative to the first measurement."""
    n, first_runs = ctx.limit_runs
    runs = [bare_loop(n) for _ in range(ctx.repeat)]
    again = medians(runs)
    drift = again["end_to_end_per_s"] / ctx.limit["end_to_end_per_s"] - 1
    row = Row("limit", "end to end, again at the end of the run", again["end_to_end_per_s"],
              "/s", again["end_to_end_per_s"] / ctx.limit["end_to_end_per_s"],
              f"drift {drift:+.0%}")
    rows = [r for r in ctx.rows if r.scenario == "limit"] + [row]
    emit("limit", {"tasks": n, "repeat": ctx.repeat, "fsync": "none"}, ctx.limit, first_runs,
         rows, extra={"end_of_run": again, "end_of_run_repetitions": runs, "drift": drift},
         echo=[row])
    return [row]
