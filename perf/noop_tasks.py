"""Tasks the benchmarks enqueue: importable by name, as an application's tasks would be."""
import greenqueue

done = 0


@greenqueue.task
def noop(*args, **kwargs):
    global done
    done += 1


def enqueue_and_drain(rt, n):
    """Enqueue ``n`` no-op tasks on the started runtime ``rt`` from this greenlet, then wait
    for the workers to run them all. Enqueue never yields, so no worker runs before the last
    enqueue: the two phases are timed apart. Returns their rates and the end-to-end rate."""
    import time
    enqueue, processed = noop.enqueue, rt.stats()["processed"]
    start = time.perf_counter()
    for i in range(n):
        enqueue(i)
    enqueued = time.perf_counter()
    rt.join()
    end = time.perf_counter()
    processed = rt.stats()["processed"] - processed
    if processed != n:
        raise RuntimeError(f"processed {processed} of {n} tasks")
    return {"enqueue_per_s": n / (enqueued - start), "process_per_s": n / (end - enqueued),
            "end_to_end_per_s": n / (end - start)}
