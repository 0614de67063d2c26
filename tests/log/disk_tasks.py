"""Tasks for the disk log tests (importable by name, as an app's tasks are)."""
import os
import signal

import gevent
from gevent.event import Event

import greenqueue

attempts = []
gate = Event()


@greenqueue.task(max_retries=2)
def suicide():
    """Kill the process from inside the task, as an OOM kill or a segfault would."""
    os.kill(os.getpid(), signal.SIGKILL)


@greenqueue.task
def held(label):
    attempts.append((label, greenqueue.current().attempt))
    gate.wait(10)


@greenqueue.task
def note_ran(label):
    """Append to the file named by GQ_RAN: the crash test's record of what ran."""
    gevent.sleep(0.001)
    fd = os.open(os.environ["GQ_RAN"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.environ.get('GQ_ROUND', '0')} {label}\n".encode())
    finally:
        os.close(fd)
