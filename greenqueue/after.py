"""Request-aware enqueue: ``enqueue(..., after="response")`` and ``greenqueue.on_commit``.

Why: a task enqueued inside a request may run before the request's database transaction
commits (and read stale rows), or run although the request failed. An in-process runtime sees
the request end, so it can hold such a task until then:

- ``after="response"``: the call is checked (pickled) and given its id at once, held in the
  request's context, and logged only when the response has been produced without an exception
  and with a status below 500. On a failed request it is dropped, and that is logged. Outside a
  request (no :class:`~greenqueue.wsgi.RequestIdMiddleware` around the app, a script, a task,
  a greenlet spawned by the request) it is enqueued at once;
- ``after=greenqueue.on_commit(register)``: ``register(callback)`` is a transaction's
  "run this after commit" hook (Django's ``transaction.on_commit``, or a few lines around
  SQLAlchemy's ``after_commit`` event, see the README); the call is enqueued when it fires.

The hook the request-id middleware calls: ``begin()`` when a request starts, ``iterate()``
around the response body, ``end(hold)`` when the server closes the response. A request that
holds nothing pays one small object and a context-variable set/reset.

A held call's ``delay`` counts from the moment it is logged. Its ``unique_key`` is checked
then too, so the id returned at enqueue may differ from the task that finally holds the key.
"""
import contextvars
import logging

from . import runtime as _runtime
from . import unique as _unique
from .envelope import encode, new_id
from .errors import TaskError

logger = logging.getLogger(__name__)
RESPONSE = "response"
_hold = contextvars.ContextVar("greenqueue_response_hold", default=None)


class ResponseHold:
    """The calls one request holds until its response is done, and how that went."""

    __slots__ = ("held", "status", "failed", "token")

    def __init__(self):
        self.held = None        # list of held calls, made on the first one
        self.status = None      # the status line the app started the response with
        self.failed = False     # an exception escaped the app or its response body


def begin():
    """The middleware, as a request starts: calls made with after="response" wait here."""
    hold = ResponseHold()
    hold.token = _hold.set(hold)
    return hold


def iterate(result, hold):
    """The response body, noting an exception raised while it is produced."""
    if hold is None or hold.held is None:
        return iter(result)  # nothing held (yet): no wrapper, no cost
    return _watched(result, hold)


def _watched(result, hold):
    try:
        yield from result
    except Exception:
        hold.failed = True
        raise


def end(hold, failed=False):
    """The middleware, as the response is closed: log the held calls, or drop them."""
    if hold is None:
        return
    try:
        _hold.reset(hold.token)
    except ValueError:  # closed from another context than the one that began it
        _hold.set(None)
    calls, hold.held = hold.held, None
    if not calls:
        return
    status = _status_code(hold.status)
    if failed or hold.failed or status is None or status >= 500:
        reason = "an exception" if (failed or hold.failed) else f"status {hold.status!r}"
        logger.warning("request failed (%s): dropped %d task(s) enqueued with "
                       "after='response': %s", reason, len(calls),
                       ", ".join(f"{c[0].name} ({c[-1]})" for c in calls))
        return
    for call in calls:
        try:
            _push_now(*call)
        except Exception:  # noqa: BLE001 - the response is out; log, and try the others
            logger.exception("could not enqueue %s (%s) after the response", call[0].name,
                             call[-1])


def _status_code(status):
    try:
        return int(str(status)[:3])
    except ValueError:
        return None


class OnCommit:
    """``after=`` value that enqueues when a transaction's commit hook fires."""

    __slots__ = ("register",)

    def __init__(self, register):
        if not callable(register):
            raise TaskError(f"on_commit takes a function that registers a callback, such as "
                            f"django.db.transaction.on_commit, not {register!r}")
        self.register = register

    def __repr__(self):
        return f"on_commit({self.register!r})"


def on_commit(register):
    """``send.enqueue(7, after=greenqueue.on_commit(transaction.on_commit))``: enqueue the
    call when ``register``'s transaction commits (``register(callback)`` runs callback then)."""
    return OnCommit(register)


def defer(spec, target, args, kwargs, delay, delay_until, priority, durable, unique_key, after):
    """The enqueue path of a call with ``after=``: hold it, or enqueue it now. Returns its id."""
    if after != RESPONSE and not isinstance(after, OnCommit) and not callable(after):
        raise TaskError(f"after must be 'response' or greenqueue.on_commit(...), not {after!r}")
    hold = _hold.get() if after == RESPONSE else None
    if after == RESPONSE and hold is None:  # not inside a request: nothing to wait for
        return _push_now(spec, target, args, kwargs, delay, delay_until, priority, durable,
                         unique_key, None)
    encode(target, args, kwargs, None, spec)  # an unpicklable argument fails here, not later
    task_id = new_id()
    call = (spec, target, args, kwargs, delay, delay_until, priority, durable, unique_key,
            task_id)
    if hold is not None:
        if hold.held is None:
            hold.held = []
        hold.held.append(call)
    else:
        register = after.register if isinstance(after, OnCommit) else after
        register(lambda: _push_now(*call))
    return task_id


def _push_now(spec, target, args, kwargs, delay, delay_until, priority, durable, unique_key,
              task_id):
    runtime = _runtime._current or _runtime.autostart()
    if unique_key is not None:
        return _unique.push(runtime, spec, target, args, kwargs, delay, delay_until, priority,
                            durable, unique_key)
    if task_id is None:
        return runtime.push(spec, target, args, kwargs, delay, delay_until, priority, durable)
    return runtime.push(spec, target, args, kwargs, delay, delay_until, priority, durable,
                        task_id=task_id)
