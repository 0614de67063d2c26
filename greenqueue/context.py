"""Per-greenlet context: the log context a task inherits and the running task's own info.

Both live in ``contextvars``; greenlet gives each greenlet its own context, so a value set in
a request's greenlet is invisible to the others. ``enqueue`` captures the log context and the
worker restores it around the task, which is how a task's log lines carry the request id of
the request that enqueued it.
"""
import contextvars
import logging

_log_context = contextvars.ContextVar("greenqueue_log_context", default=None)
_current_task = contextvars.ContextVar("greenqueue_current_task", default=None)


class log_context:
    """Set fields (``request_id=...`` or any others) for logs of this greenlet and its tasks.

    Call it to set them until the greenlet ends, or use it as a context manager to restore
    the previous fields on exit. Fields merge with those already set. ``log_context()`` with
    no fields reads them: ``dict(log_context())``.
    """

    def __init__(self, fields=None, **more):
        merged = dict(_log_context.get() or {})
        merged.update(fields or {}, **more)
        self.fields = merged
        self._token = _log_context.set(merged) if (fields or more) else None

    def __enter__(self):
        return self.fields

    def __exit__(self, *exc):
        if self._token is not None:
            _log_context.reset(self._token)
            self._token = None

    def __iter__(self):
        return iter(self.fields)

    def keys(self):
        return self.fields.keys()

    def __getitem__(self, key):
        return self.fields[key]


def captured():
    """The log context to store in an enqueued task (None when empty: cheaper to pickle)."""
    return _log_context.get()


class TaskInfo:
    """What ``greenqueue.current()`` returns inside a running task."""

    __slots__ = ("task_id", "name", "attempt", "retries", "enqueued_at")

    def __init__(self, task_id, name, attempt, enqueued_at):
        self.task_id = task_id
        self.name = name
        self.attempt = attempt          # 1 on the first run
        self.retries = attempt - 1      # attempts made before this one
        self.enqueued_at = enqueued_at

    def __repr__(self):
        return f"<TaskInfo {self.name} {self.task_id} attempt={self.attempt}>"


def current():
    """The running task's :class:`TaskInfo`, or None outside a task."""
    env = _current_task.get()  # the worker sets the envelope: cheaper than a TaskInfo per task
    return None if env is None else TaskInfo(env.id, env.name, env.attempt + 1, env.enqueued_at)


class RequestIdFilter(logging.Filter):
    """Put ``request_id`` (and ``task_id`` inside a task) on every log record.

    Add it to a handler and use ``%(request_id)s`` in the format. Records emitted outside any
    request or task get ``default`` ("-").
    """

    def __init__(self, name="", default="-"):
        super().__init__(name)
        self.default = default

    def filter(self, record):
        fields = _log_context.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        if not hasattr(record, "request_id"):
            record.request_id = self.default
        env = _current_task.get()
        if not hasattr(record, "task_id"):
            record.task_id = env.id if env is not None else self.default
        return True
