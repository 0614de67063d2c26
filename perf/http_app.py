"""The WSGI app of the http scenario, served by ``greenqueue run perf.http_app:app``.

``/``            the measured endpoint: a tiny plain-text response, as cheap as WSGI gets;
``/load/start``  starts background load: batches of 100 000 no-op tasks, each enqueued in
                 chunks of 1 000 with a 1 ms sleep between chunks (like requests that each
                 enqueue 1 000 tasks: a chunk holds the hub ~5 ms), then drained by the
                 runtime's workers; the next batch starts as soon as one has drained, until
                 ``/load/stop``. (Chunks of 100 were tried: under HTTP load the 1 ms sleeps
                 stretch so much that only ~6 000 tasks/s ran, too light to be the test.)
``/load/stop``   stops it and answers with what ran (JSON): tasks processed from start to
                 stop, batches fully drained, and each full batch's enqueue+drain duration.
"""
import json
import time

import gevent

import greenqueue
from perf import noop_tasks

BATCH, CHUNK = 100_000, 1_000
_load = {"greenlet": None, "stop": False}


def _background_load(report):
    rt = greenqueue.current_runtime()
    while not _load["stop"]:
        start = time.perf_counter()
        for first in range(0, BATCH, CHUNK):
            for i in range(first, first + CHUNK):
                noop_tasks.noop.enqueue(i)
            gevent.sleep(0.001)
            if _load["stop"]:
                break
        while rt.stats()["ready"] or rt.stats()["in_flight"]:
            gevent.sleep(0.005)
        if not _load["stop"]:
            report["drain_s"].append(time.perf_counter() - start)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/load/start":
        stats = greenqueue.current_runtime().stats()
        report = {"drain_s": [], "processed_before": stats["processed"],
                  "enqueued_before": stats["enqueued"]}
        _load.update(stop=False, report=report,
                     greenlet=gevent.spawn(_background_load, report))
        body = b"started"
    elif path == "/load/stop":
        report = _load.get("report") or {"drain_s": [], "processed_before": 0,
                                         "enqueued_before": 0}
        # every task enqueued and processed from start to now, whole batches or not
        stats = greenqueue.current_runtime().stats()
        report["processed"] = stats["processed"] - report.pop("processed_before")
        report["enqueued"] = stats["enqueued"] - report.pop("enqueued_before")
        _load["stop"] = True
        if _load["greenlet"] is not None:
            _load["greenlet"].join()  # the rest drains now, so the next idle window is idle
        report["batches_drained"] = len(report["drain_s"])
        body = json.dumps(report).encode()
    else:
        body = b"hello from greenqueue\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
