"""Defining tasks and enqueueing them: ``@task`` functions, ``Task`` classes, ``wrap(obj)``.

The keyword names ``delay``, ``delay_until``, ``priority``, ``durable``, ``unique_key`` and
``after`` belong to ``enqueue``; a task whose own parameters use one of them is refused when it
is defined, since its callers could never pass that argument through.
"""
import functools
import inspect

from . import envelope as _envelope
from . import after as _after
from . import runtime as _runtime
from . import unique as _unique
from .errors import TaskError
from .spec import (DEFAULT_MAX_RETRIES, PRIORITY_LIMIT, TaskSpec, backoff, describe,
                   register)

RESERVED = frozenset({"delay", "delay_until", "priority", "durable", "unique_key", "after"})


def _check_definition(fn, what, max_retries, timeout, priority, unique_for=None):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    clash = sorted(RESERVED & set(params))
    if clash:
        raise TaskError(f"{what} has parameter(s) {', '.join(map(repr, clash))}, reserved for "
                        f"enqueue options ({', '.join(sorted(RESERVED))}); rename them")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise TaskError(f"{what}: max_retries must be an integer >= 0, not {max_retries!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise TaskError(f"{what}: timeout must be a positive number of seconds or None")
    if (not isinstance(priority, int) or isinstance(priority, bool)
            or not -PRIORITY_LIMIT <= priority < PRIORITY_LIMIT):
        raise TaskError(f"{what}: priority must be a 32-bit int, not {priority!r}")
    if unique_for is not None and (isinstance(unique_for, bool) or not isinstance(
            unique_for, (int, float)) or not 0 < unique_for < float("inf")):
        raise TaskError(f"{what}: unique_for must be a positive number of seconds or None")


class _Enqueuer:
    """The ``enqueue`` of a spec: target is None (found by name) or the pickled spec."""

    _target = None          # None: found again by name; else the spec pickled by value
    _by_value = None        # decided on the first enqueue

    def _push(self, args, kwargs, delay, delay_until, priority, durable, unique_key=None,
              after=None):
        if self._by_value is None:
            self._pickle_if_needed()
        runtime = _runtime._current or _runtime.autostart()
        if unique_key is None and after is None and not self.unique:
            return runtime.push(self, self._target, args, kwargs, delay, delay_until, priority,
                                durable)
        if unique_key is None and self.unique:
            unique_key = _unique.key_for(self, args, kwargs)
        if after is not None:
            return _after.defer(self, self._target, args, kwargs, delay, delay_until, priority,
                                durable, unique_key, after)
        return _unique.push(runtime, self, self._target, args, kwargs, delay, delay_until,
                            priority, durable, unique_key)

    def _pickle_if_needed(self):
        if not _envelope.portable_name(self.name):
            try:
                self._target = _envelope.pickled_target(self)
            except Exception as exc:
                # A module-level task of the main script whose globals cannot be pickled (a
                # lock, an Event) is still unique by name: this process finds it in the
                # registry, and a restarted script defines it again before replay.
                if "<locals>" not in self.name:
                    self._by_value = False
                    return
                raise TaskError(f"task {self.name} is not importable by name and cannot be "
                                f"pickled by value: {type(exc).__name__}: {exc}") from None
        self._by_value = self._target is not None


class TaskFunction(_Enqueuer, TaskSpec):
    """A function made a task by ``@greenqueue.task``; calling it still runs it directly."""

    def __init__(self, fn, priority=0, max_retries=DEFAULT_MAX_RETRIES, timeout=None,
                 retry_interval=None, unique=False, unique_for=None):
        _check_definition(fn, f"task {fn.__qualname__}", max_retries, timeout, priority,
                          unique_for)
        TaskSpec.__init__(self, fn, f"{fn.__module__}:{fn.__qualname__}")
        functools.update_wrapper(self, fn)
        self.priority = priority
        self.max_retries = max_retries
        self.timeout = timeout
        if retry_interval is not None:
            self.retry_interval = retry_interval
        self.unique = bool(unique)
        self.unique_for = unique_for
        if unique:  # keyed by arguments; an instance attribute keeps plain enqueue lean
            self.enqueue = self._enqueue_unique
        register(self)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def enqueue(self, *args, delay=None, delay_until=None, priority=None, durable=False,
                unique_key=None, after=None, **kwargs):
        """Log the call and return its task id at once; a worker greenlet runs it later.

        ``unique_key``: while a task holding this key waits or runs, return its id instead.
        ``after="response"``: log it only once the current request's response succeeded;
        ``after=greenqueue.on_commit(register)``: once a transaction commits.
        """
        if self._by_value is None:
            self._pickle_if_needed()
        runtime = _runtime._current or _runtime.autostart()
        if unique_key is None and after is None:
            return runtime.push(self, self._target, args, kwargs, delay, delay_until, priority,
                                durable)
        if after is not None:
            return _after.defer(self, self._target, args, kwargs, delay, delay_until, priority,
                                durable, unique_key, after)
        return _unique.push(runtime, self, self._target, args, kwargs, delay, delay_until,
                            priority, durable, unique_key)

    def _enqueue_unique(self, *args, delay=None, delay_until=None, priority=None,
                        durable=False, unique_key=None, after=None, **kwargs):
        """``enqueue`` of a ``unique=True`` task: the key defaults to its name and arguments."""
        if unique_key is None:
            unique_key = _unique.key_for(self, args, kwargs)
        return TaskFunction.enqueue(self, *args, delay=delay, delay_until=delay_until,
                                    priority=priority, durable=durable, unique_key=unique_key,
                                    after=after, **kwargs)

    def __repr__(self):
        return f"<greenqueue task {self.name}>"


def task(fn=None, *, priority=0, max_retries=DEFAULT_MAX_RETRIES, timeout=None,
         retry_interval=None, unique=False, unique_for=None):
    """Make a function a task: ``@task`` or ``@task(priority=5, max_retries=3, timeout=30)``.

    ``retry_interval(exc, attempt)`` may replace the backoff; returning None or False gives up.
    ``unique=True``: an enqueue while a call with equal arguments waits or runs returns that
    call's id; ``unique_for`` seconds bound how long a key holds (default: until the task ends).
    """
    if fn is None:
        return lambda f: task(f, priority=priority, max_retries=max_retries, timeout=timeout,
                              retry_interval=retry_interval, unique=unique,
                              unique_for=unique_for)
    if isinstance(fn, type) or not callable(fn):
        raise TaskError(f"@greenqueue.task decorates functions, not {fn!r}; "
                        "for classes subclass greenqueue.Task")
    return TaskFunction(fn, priority, max_retries, timeout, retry_interval, unique, unique_for)


class _ClassSpec(_Enqueuer, TaskSpec):
    """The spec of a Task subclass; reads the class's attributes at run time."""

    def __init__(self, cls):
        TaskSpec.__init__(self, cls.perform, f"{cls.__module__}:{cls.__qualname__}")
        self.cls = cls

    priority = property(lambda self: self.cls.priority)
    max_retries = property(lambda self: self.cls.max_retries)
    timeout = property(lambda self: self.cls.timeout)
    unique = property(lambda self: self.cls.unique)
    unique_for = property(lambda self: self.cls.unique_for)

    def invoke(self, args, kwargs):
        return self.cls().perform(*args, **kwargs)

    def retry_interval(self, exc, attempt):
        return self.cls().retry_interval(exc, attempt)


class Task:
    """Base class for class-based tasks: subclass it and implement ``perform``.

    Class attributes ``priority``, ``max_retries`` and ``timeout`` (seconds per attempt, None
    for no limit) set the policy; override ``retry_interval(exc, attempt)`` to change the
    backoff (return None or False to give up). ``unique = True`` and ``unique_for`` as for
    ``@greenqueue.task``.
    """

    priority = 0
    max_retries = DEFAULT_MAX_RETRIES
    timeout = None
    unique = False
    unique_for = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_definition(cls.perform, f"task {cls.__qualname__}.perform", cls.max_retries,
                          cls.timeout, cls.priority, cls.unique_for)
        cls._spec = _ClassSpec(cls)
        register(cls._spec)

    def retry_interval(self, exc, attempt):
        return backoff(attempt)

    def perform(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__qualname__} must implement perform()")

    @classmethod
    def enqueue(cls, *args, delay=None, delay_until=None, priority=None, durable=False,
                unique_key=None, after=None, **kwargs):
        """Log a call of ``perform`` and return its task id at once (options as for
        ``@greenqueue.task`` functions' ``enqueue``)."""
        if cls is Task:
            raise TaskError("enqueue a subclass of greenqueue.Task, not Task itself")
        return cls._spec._push(args, kwargs, delay, delay_until, priority, durable, unique_key,
                               after)


class wrap:
    """``wrap(obj).method(...)`` enqueues ``obj.method(...)`` instead of calling it.

    Options apply to every call made through this wrapper: ``delay``, ``delay_until``,
    ``priority``, ``durable``. The object and arguments are pickled at enqueue (cloudpickle when
    plain pickle cannot), so an unpicklable object fails there, not in the worker.
    """

    def __init__(self, obj, *, delay=None, delay_until=None, priority=None, durable=False):
        self._obj = obj
        self._options = (delay, delay_until, priority, durable)

    def __getattr__(self, attr):
        method = getattr(self._obj, attr)
        if not callable(method):
            raise TaskError(f"{attr!r} of {self._obj!r} is not callable")
        spec = TaskSpec(method, describe(method))

        def enqueue(*args, **kwargs):
            runtime = _runtime._current or _runtime.autostart()
            return runtime.push(spec, method, args, kwargs, *self._options)
        enqueue.__name__ = attr
        return enqueue
