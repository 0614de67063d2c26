"""Eager mode (``Runtime(eager=True)`` or ``GREENQUEUE_EAGER=1``): ``enqueue`` runs the task.

For tests and scripts that want a task's effect before ``enqueue`` returns, without workers.
The task runs at once in the caller's greenlet, but only after its call went through the same
pickle round-trip a logged task makes: an argument that cannot be pickled, or that does not
survive unpickling unchanged in type, fails in the test the way it would in production.
Delays are checked as a real enqueue checks them, then ignored; the task's exception reaches
the caller (no retries, no dead set); nothing is logged.
"""
import time

from .context import _current_task, _log_context
from .envelope import Envelope, decode, encode, new_id
from .errors import TaskError


def push_eagerly(runtime, spec, target, args, kwargs, delay=None, delay_until=None,
                 priority=None, durable=False, task_id=None):
    """``Runtime.push`` of an eager runtime: same arguments, runs the call, returns its id."""
    if delay is not None or delay_until is not None:
        from .runtime import due_time
        due_time(delay, delay_until)  # refuse what a real enqueue refuses
    if priority is None:
        priority = spec.priority
    elif priority.__class__ is not int:
        raise TaskError(f"priority must be an int, not {priority!r}")
    payload = encode(target, args, kwargs, _log_context.get(), spec)
    env = Envelope(task_id or new_id(), spec.name, payload, priority, 0.0, 0, time.time())
    spec, args, kwargs, context = decode(env)
    runtime.counters.enqueued += 1
    task_token = _current_task.set(env)
    context_token = _log_context.set(context)
    try:
        spec.invoke(args, kwargs)
    except Exception:
        runtime.counters.failed += 1
        raise
    finally:
        _log_context.reset(context_token)
        _current_task.reset(task_token)
    runtime.counters.processed += 1
    return env.id
