"""The shared scenario's no-op task and the app ``greenqueue run`` serves around it.

The task body is the peers' ``hit()`` (perf/peers/peer_common.py): one added to a counter
that a background greenlet adds to a Redis key every 5 ms, so completions are counted the same
way for greenqueue and every peer, across processes.
"""
import greenqueue
from perf.peers.peer_common import hit


@greenqueue.task
def noop(i):
    hit()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
