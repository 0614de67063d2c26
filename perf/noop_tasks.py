"""Tasks the benchmarks enqueue: importable by name, as an application's tasks would be."""
import greenqueue

done = 0


@greenqueue.task
def noop(*args, **kwargs):
    global done
    done += 1
