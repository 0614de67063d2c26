"""The storage contract: what a log must keep, and what survives a crash.

A log records, per task id, the latest of four facts; replay reads them back:

- ``append(env)``  the task is pending (new, retried, re-enqueued after an interrupted attempt
  or taken out of the dead set). Reaches durable-enough storage (the kernel, at least) before
  it returns: a crash of the process right after loses nothing.
- ``begin(envs)``  attempts of these tasks are starting. If the process dies before a later
  fact about a task, replay counts the attempt as made ("process died during attempt N").
  One call covers several tasks; it must reach storage before the tasks run.
- ``remove(task_id)``  finished (or purged from the dead set); may be batched and reach
  storage a little later (a crash before that runs the task again: at-least-once).
- ``bury(env, error)``  gave up: kept in the dead set with the error (a dict of type, message,
  traceback, failed_at) until retried (``append``) or purged (``remove``).

Reading: ``pending()`` yields the envelopes to run or wait for (crash-interrupted attempts
counted), ``dead()`` the dead set as :class:`DeadTask`. ``sync()`` blocks the calling greenlet
until everything written so far is on stable storage (group commit), ``close()`` flushes and
releases the log. Backends see envelopes' fields and opaque payload bytes; none imports a task.

Backends: ``memory.py``, ``disk.py`` (the default), and the shared logs ``redis.py`` and
``postgres.py``, which many processes use at once: they add claims under a lease (see
``shared.py``) and the runtime then feeds its workers from them instead of replaying.
"""
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class DeadTask:
    """An entry of the dead set."""

    envelope: object
    error: dict

    @property
    def id(self):
        return self.envelope.id

    @property
    def name(self):
        return self.envelope.name

    @property
    def attempts(self):
        return self.envelope.attempt


class Log:
    """Base class naming the contract; see the module docstring for each method's promise."""

    def append(self, env):
        raise NotImplementedError

    def begin(self, envs):
        raise NotImplementedError

    def remove(self, task_id):
        raise NotImplementedError

    def bury(self, env, error):
        raise NotImplementedError

    def pending(self):
        raise NotImplementedError

    def dead(self):
        raise NotImplementedError

    def sync(self):
        """Wait until everything written so far is durable. Default: nothing to wait for."""

    def close(self):
        """Flush and release. Default: nothing to release."""

    def describe(self):
        """One line for the start-up log: where the tasks live."""
        return type(self).__name__


SHARED_SCHEMES = {"redis": ("redis", "redis", "Redis"), "rediss": ("redis", "redis", "Redis"),
                  "unix": ("redis", "redis", "Redis"),
                  "postgresql": ("postgres", "psycopg", "PostgreSQL"),
                  "postgres": ("postgres", "psycopg", "PostgreSQL")}


def check_backend(backend):
    """Refuse a bad ``backend`` setting without connecting anywhere (Runtime construction).

    A URL names a shared backend; its package is an optional extra, so a missing one is named
    here, with the pip command, rather than as an ImportError at start."""
    if isinstance(backend, Log) or backend in ("memory", "disk"):
        return
    scheme = backend.split("://", 1)[0].lower() if isinstance(backend, str) else None
    if scheme not in SHARED_SCHEMES or "://" not in backend:
        raise ConfigError(f"unknown backend {backend!r}: use 'memory', 'disk', a redis:// or "
                          f"postgresql:// URL, or a Log instance")
    extra, package, _ = SHARED_SCHEMES[scheme]
    import importlib.util
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # blocked or half-imported: as good as missing
        found = False
    if not found:
        raise ConfigError(f"backend {scheme}:// needs the {package!r} package: "
                          f"pip install 'greenqueue[{extra}]'")


def open_log(backend, **options):
    """Build the log named by ``backend`` ("memory", "disk", a Redis or PostgreSQL URL) or
    return a Log instance as is. Shared backends connect here: an unreachable server is a
    ConfigError at start, not a surprise at the first enqueue."""
    if isinstance(backend, Log):
        return backend
    if backend == "memory":
        from .memory import MemoryLog
        return MemoryLog()
    if backend == "disk":
        from .disk import DiskLog
        return DiskLog(**options)
    check_backend(backend)
    if SHARED_SCHEMES[backend.split("://", 1)[0].lower()][0] == "redis":
        from .redis import RedisLog
        return RedisLog(backend, **options)
    from .postgres import PostgresLog
    return PostgresLog(backend, **options)
