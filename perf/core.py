"""Core runtime throughput on the in-memory log versus the bare loop, measured in one run.

    python -m perf.core [--tasks 100000] [--repeat 3]     (or: python -m perf --scenario core)

The bare loop does only what any in-process queue must: pickle the call, push it on a heap,
pop it, unpickle it, call it. greenqueue's figure is enqueue + processing of the same number
of no-op tasks from one greenlet, on ``Runtime(backend="memory")``.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import heapq  # noqa: E402
import itertools  # noqa: E402
import pickle  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import greenqueue  # noqa: E402
from perf import noop_tasks  # noqa: E402
from perf.report import Row, emit  # noqa: E402


def bare(n):
    heap, seq, call = [], itertools.count(), noop_tasks.noop.fn
    start = time.perf_counter()
    for i in range(n):
        heapq.heappush(heap, (0, next(seq), pickle.dumps(("perf.noop_tasks:noop", (i,), {}), 5)))
    while heap:
        _, args, kwargs = pickle.loads(heapq.heappop(heap)[2])
        call(*args, **kwargs)
    return n / (time.perf_counter() - start)


def greenqueue_memory(n):
    with greenqueue.Runtime(backend="memory") as rt:
        return noop_tasks.enqueue_and_drain(rt, n)


def measure(tasks, repeat):
    bares, runs = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine weather
        bares.append(bare(tasks))
        runs.append(greenqueue_memory(tasks))
    result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    result["bare_loop_per_s"] = statistics.median(bares)
    result["ratio_to_bare"] = result["end_to_end_per_s"] / result["bare_loop_per_s"]
    return result, [dict(r, bare_loop_per_s=b) for r, b in zip(runs, bares)]


def run(ctx):
    """The harness's ``core`` scenario (issue 3's figure): writes results/core_memory.json."""
    n = ctx.size(100_000, 100_000)
    result, runs = measure(n, ctx.repeat)
    rows = [Row("core", "memory log, enqueue+process", result["end_to_end_per_s"], "/s",
                ctx.ratio(result["end_to_end_per_s"], "end_to_end_per_s"), ">= 150,000/s",
                result["end_to_end_per_s"] >= 150_000),
            Row("core", "bare loop without log (no write)", result["bare_loop_per_s"], "/s",
                ctx.ratio(result["bare_loop_per_s"], "end_to_end_per_s")),
            Row("core", "memory log / bare loop", f"{result['ratio_to_bare']:.2f}", "", None,
                "~0.65", result["ratio_to_bare"] >= 0.65)]
    emit("core_memory", {"tasks": n, "repeat": ctx.repeat, "backend": "memory"}, result, runs,
         rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args(argv)
    result, runs = measure(opts.tasks, opts.repeat)
    emit("core_memory", {"tasks": opts.tasks, "repeat": opts.repeat, "backend": "memory"},
         result, runs)


if __name__ == "__main__":
    main()
