"""greenqueue: durable background tasks inside your gevent WSGI process.

Importing this package has no side effects: it patches nothing, opens no file and starts no
greenlet. A runtime starts with ``greenqueue.start()``, ``Runtime(...).start()``, ``greenqueue
run``, or on the first ``enqueue``.
"""
from .context import RequestIdFilter, current, log_context
from .envelope import Envelope
from .errors import DrainTimeout
from .errors import (BackendUnavailable, ConfigError, DecodeError, GreenqueueError, LogCorrupt,
                     LogWriteError, PushTimeout, SerializationError, Shutdown, TaskError, TaskTimeout)
from .log import DeadTask, Log
from .runtime import Runtime, configure, current_runtime, start, stop
from .after import on_commit
from .scheduler import periodic, schedule
from .task import Task, task, wrap

__version__ = "0.1.0"

__all__ = [
    # defining and enqueueing tasks
    "task", "Task", "wrap", "current",
    # periodic tasks
    "periodic", "schedule",
    # enqueue after the response or a commit
    "on_commit",
    # running them
    "Runtime", "configure", "start", "stop", "current_runtime",
    # logging context
    "log_context", "RequestIdFilter",
    # storage
    "Log", "DeadTask", "Envelope",
    # errors
    "GreenqueueError", "ConfigError", "TaskError", "SerializationError", "PushTimeout",
    "TaskTimeout", "LogWriteError", "LogCorrupt", "DecodeError", "Shutdown",
    "DrainTimeout",
    "BackendUnavailable",
]
