"""What the dispatcher needs to run a task: the callable and its retry policy.

Task definitions (``task.py``) register a spec under their name; payloads that carry their own
callable (closures, ``__main__`` functions, ``wrap()`` targets) get a plain :class:`TaskSpec`
when decoded. Keeping this apart from ``task.py`` lets the dispatcher run tasks without
importing the public task API (imports point one way: task -> runtime -> dispatcher -> spec).
"""
import importlib
import random

DEFAULT_MAX_RETRIES = 5
PRIORITY_LIMIT = 2 ** 31    # priorities are logged as signed 32-bit ints (Envelope.pack)
_registry = {}


def backoff(attempt):
    """Seconds before retrying after failed attempt ``attempt`` (1-based): attempt**4 + 10 + jitter.

    Attempt 1 waits 11-21 s, attempt 3 91-121 s, attempt 5 635-685 s; the jitter
    keeps tasks that failed together (a downstream outage) from retrying together.
    """
    return attempt ** 4 + 10 + random.uniform(0, 10 * attempt)


class TaskSpec:
    """A callable plus the policy that governs its attempts."""

    max_retries = DEFAULT_MAX_RETRIES
    timeout = None
    priority = 0

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or describe(fn)

    def invoke(self, args, kwargs):
        return self.fn(*args, **kwargs)

    def retry_interval(self, exc, attempt):
        return backoff(attempt)


def describe(fn):
    """``module:qualname`` of a callable, or of a bound method's owner and method."""
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, type(random)):
        cls = owner if isinstance(owner, type) else type(owner)
        return f"{cls.__module__}:{cls.__qualname__}.{fn.__name__}"
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def register(spec):
    _registry[spec.name] = spec


def lookup(name):
    """The spec registered under ``name``, importing its module first if needed.

    Raises LookupError when the module or attribute no longer exists (code changed between
    deploys); the dispatcher sends such a task to the dead set.
    """
    spec = _registry.get(name)
    if spec is not None:
        return spec
    module, _, qualname = name.partition(":")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise LookupError(f"task {name!r}: cannot import {module!r}: {exc}") from exc
    spec = _registry.get(name)
    if spec is None:
        raise LookupError(f"task {name!r} is not defined in {module!r} any more")
    return spec
