"""A WSGI app with an every-second schedule, for test_periodic_run (``greenqueue run``).

Each occurrence appends "PID TIME" to the file named by ``GQ_TICKS``: the test counts them
and sees which process leads.
"""
import os
import time

import greenqueue


@greenqueue.periodic(every=1)
@greenqueue.task
def heartbeat():
    with open(os.environ["GQ_TICKS"], "a") as f:
        f.write(f"{os.getpid()} {time.time():.3f}\n")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
