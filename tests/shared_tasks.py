"""Tasks for the shared-backend tests, run by child processes that share one Redis or database.

Each run appends "<pid> <attempt> <label>" to the file named by GQ_RAN (O_APPEND: one line per
write, whichever process writes). ``hang`` blocks for a minute when GQ_HANG is set, so that a
process can be killed while it holds claims.
"""
import os

import gevent

import greenqueue


def note(label, what="ran"):
    line = f"{os.getpid()} {greenqueue.current().attempt} {what} {label}\n"
    fd = os.open(os.environ["GQ_RAN"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@greenqueue.task
def work(label):
    gevent.sleep(0.001)
    note(label)


@greenqueue.task
def hang(label):
    note(label, "started")
    if os.environ.get("GQ_HANG"):
        gevent.sleep(60)
    note(label)


@greenqueue.task(max_retries=0)
def hang_once(label):
    note(label, "started")
    if os.environ.get("GQ_HANG"):
        gevent.sleep(60)
    note(label)
