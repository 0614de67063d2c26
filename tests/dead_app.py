"""An app whose task fails until told otherwise, for the tests of ``greenqueue dead``.

``fragile`` raises while the file named by ``GQ_BROKEN`` exists and records each successful run
in the file named by ``GQ_RAN`` (one line per run, O_APPEND). ``GET /fill?n=N&label=L`` enqueues
N calls (``&task=other`` of ``other``, ``&delay=S`` to run later), yielding between chunks so
that the server keeps answering meanwhile.
"""
import json
import os
from urllib.parse import parse_qs

import gevent

import greenqueue


class Broken(Exception):
    """What a fragile task raises while it is broken."""


@greenqueue.task(max_retries=0)
def fragile(n, label="x"):
    if os.path.exists(os.environ["GQ_BROKEN"]):
        raise Broken(f"broken on purpose: call {n} of {label}")
    fd = os.open(os.environ["GQ_RAN"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{label} {n}\n".encode())
    finally:
        os.close(fd)


@greenqueue.task(max_retries=0)
def other(n):
    raise Broken(f"other {n}")


def runs(directory):
    """The lines ``fragile`` wrote to ``directory``/ran (the tests set GQ_RAN there)."""
    try:
        with open(os.path.join(directory, "ran")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def app(environ, start_response):
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    ids = []
    if environ.get("PATH_INFO") == "/fill":
        task = other if query.get("task") == "other" else fragile
        delay = float(query["delay"]) if "delay" in query else None
        for n in range(int(query.get("n", "1"))):
            ids.append(task.enqueue(n, delay=delay) if task is other
                       else task.enqueue(n, label=query.get("label", "x"), delay=delay))
            if n % 500 == 499:
                gevent.sleep(0)
    body = json.dumps({"ids": ids if len(ids) <= 100 else len(ids)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
