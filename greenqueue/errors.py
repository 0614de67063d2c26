"""Every exception a user of greenqueue may catch, under one root.

Interrupts that must not be swallowed by a task's ``except Exception`` (shutdown) derive from
``BaseException`` and live apart from the root on purpose, as ``gevent.Timeout`` does.
"""


class GreenqueueError(Exception):
    """Root of every error greenqueue raises on purpose."""


class ConfigError(GreenqueueError, ValueError):
    """A Runtime setting is unknown or out of range."""


class TaskError(GreenqueueError, ValueError):
    """A task definition or an enqueue call is wrong: reserved parameter names, bad delay, ..."""


class SerializationError(TaskError):
    """An argument of an enqueue call cannot be pickled; the message names the argument."""


class PushTimeout(GreenqueueError):
    """Backpressure: the ready queue stayed above its low-water mark for ``push_timeout`` s."""


class LogWriteError(GreenqueueError, OSError):
    """The log could not take a record (disk full, I/O error); nothing logged before is lost."""


class LogCorrupt(GreenqueueError):
    """A record of the log failed its checksum or signature and was set aside."""


class BackendUnavailable(GreenqueueError, ConnectionError):
    """A shared backend (Redis, PostgreSQL) stayed unreachable through a short bounded retry.

    Raised by ``enqueue`` so that a task is never dropped silently: the caller decides whether
    to fail the request, fall back, or try again later.
    """


class DrainTimeout(GreenqueueError, TimeoutError):
    """``TestRuntime.drain`` gave up: tasks were still ready or running at its timeout."""


class DecodeError(GreenqueueError):
    """A logged task can no longer be decoded (its code changed, or it was tampered with)."""


class Shutdown(BaseException):
    """Thrown into a running task when the runtime stops past its drain deadline.

    A BaseException so that a task's ``except Exception`` cannot swallow it; the dispatcher
    treats it as an interruption (the attempt does not count), never as a failure.
    """


class TaskTimeout(GreenqueueError, TimeoutError):
    """An attempt ran past its task's ``timeout``; it counts as a failure and is retried."""


class ProcessDied(GreenqueueError):
    """Recorded in the dead set for a task whose attempts were all cut short by crashes."""
