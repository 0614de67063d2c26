"""A bare WSGI app whose endpoint enqueues a slow task and answers at once.

    greenqueue run examples.wsgi_app:app
    curl -i 'http://127.0.0.1:8000/report?user=7&seconds=2'          # &delay=10 to run it later

The response carries ``X-Request-Id``; the task's log lines, two seconds later, carry the same id.
"""
import json
import logging
import os
from urllib.parse import parse_qs

from examples.tasks import fetch_report

log = logging.getLogger("examples.wsgi_app")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/report":
        user = query.get("user", "1")
        delay = float(query["delay"]) if "delay" in query else None
        task_id = fetch_report.enqueue(user, seconds=float(query.get("seconds", 2.0)), delay=delay)
        log.info("enqueued report for user %s as task %s", user, task_id)
        return _json(start_response, "202 Accepted", {"task_id": task_id, "pid": os.getpid()})
    if path == "/":
        return _json(start_response, "200 OK", {"hello": "greenqueue", "pid": os.getpid()})
    return _json(start_response, "404 Not Found", {"error": "not found"})


def _json(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]
