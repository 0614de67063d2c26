"""An app with a task that holds the gevent hub: ``GET /spin?ms=300`` enqueues ``spin``, which
burns the CPU without yielding, as a CPU-bound loop or a C library that ignores monkey-patching
would."""
import time

import greenqueue


@greenqueue.task(max_retries=0)
def spin(ms):
    deadline = time.perf_counter() + ms / 1000
    while time.perf_counter() < deadline:
        pass


def app(environ, start_response):
    ms = float((environ.get("QUERY_STRING") or "ms=300").partition("=")[2] or 300)
    task_id = spin.enqueue(ms)
    body = task_id.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
