"""The runtime: owns the settings, the log, the queue and the dispatcher of one process.

Duties:
- ``start()`` opens the log, replays what it holds into the queue, starts the workers and
  becomes the process's current runtime (the one ``enqueue`` uses) until it stops. A shared
  log (Redis, PostgreSQL) is replayed by nobody: it is the queue of every process, and a
  fetcher (fetcher.py) feeds this process's workers with claims from it;
- ``push()`` is the enqueue path: backpressure, encode, log, queue (the local queue only
  with a local log: one precomputed flag, ``_local``, so the disk path pays one branch);
- ``stop(timeout)`` quiets the dispatcher, drains until the deadline, closes the log;
- the process-wide default runtime: ``configure()``, ``start()``, ``stop()`` and the
  auto-start on the first enqueue of an app that never started one.
"""
import atexit
import logging
import os
import time
import warnings

from . import envelope as _envelope
from . import unique as _unique
from .checks import _bool, _non_negative_int, _positive_float, _positive_int, due_time
from .cluster import Publisher
from .context import _log_context
from .dispatcher import Counters, Dispatcher, describe_error
from .envelope import PROTOCOL, Envelope, _dumps, new_id, packed_id, unpack
from .errors import ConfigError, DecodeError, GreenqueueError, ProcessDied, TaskError
from .fetcher import Fetcher
from .log import check_backend, open_log
from .metrics import Metrics
from .queue import TaskQueue
from .scheduler import Scheduler
from .spec import PRIORITY_LIMIT

logger = logging.getLogger(__name__)
_current = None          # the running Runtime that enqueue uses
_settings = {}           # what configure() set for the default runtime


class Runtime:
    """An in-process task runtime. Use as ``with Runtime(...) as rt:`` or ``start()``/``stop()``.

    backend: "disk" (default: a write-ahead log in ``path``), "memory", a Log instance, or
        the URL of a log shared by many processes and hosts: "redis://host:6379/0" or
        "postgresql://user@host/db" (see greenqueue/log/shared.py).
    lease: with a shared backend, seconds a claimed task stays this process's without a
        renewal; after a crash, others take its tasks back once their lease runs out.
    concurrency: worker greenlets, i.e. tasks that may run at once.
    backpressure: when True, enqueue blocks while more than ``high_water_mark`` tasks are
        ready, until they fall to ``low_water_mark`` (default 80 %), raising PushTimeout after
        ``push_timeout`` seconds.
    fsync_interval, segment_size, secret: disk log settings (see greenqueue/log/FORMAT.md).
    eager: run each task at once inside ``enqueue``, after a pickle round-trip, and keep
        nothing (see greenqueue/eager.py); default from ``GREENQUEUE_EAGER=1``. For tests.
    """

    def __init__(self, *, backend="disk", path="greenqueue-data", concurrency=100,
                 backpressure=False, high_water_mark=1000, low_water_mark=None,
                 push_timeout=2.0, fsync_interval=0.5, segment_size=2 * 1024 * 1024,
                 secret=None, eager=None, lease=30.0):
        self.backend = backend
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise ConfigError(f"path must be a str or os.PathLike, not {path!r}") from None
        self.concurrency = _positive_int("concurrency", concurrency)
        self.backpressure = _bool("backpressure", backpressure)
        self.high_water_mark = _positive_int("high_water_mark", high_water_mark)
        if low_water_mark is None:
            low_water_mark = int(self.high_water_mark * 0.8)
        self.low_water_mark = _non_negative_int("low_water_mark", low_water_mark)
        if self.low_water_mark >= self.high_water_mark:
            raise ConfigError(f"low_water_mark ({low_water_mark}) must be below "
                              f"high_water_mark ({high_water_mark})")
        self.push_timeout = _positive_float("push_timeout", push_timeout)
        self.fsync_interval = _positive_float("fsync_interval", fsync_interval)
        self.segment_size = _positive_int("segment_size", segment_size)
        if secret is None:
            secret = os.environ.get("GREENQUEUE_SECRET") or None
        if secret is not None and not isinstance(secret, (str, bytes)):
            raise ConfigError("secret must be a str or bytes")
        self.secret = secret
        check_backend(backend)  # a ConfigError naming the valid choices, or a missing package
        self.lease = _positive_float("lease", lease)
        self.fetcher = None             # with a shared log only: see greenqueue/fetcher.py
        self.publisher = None           # with a shared log: this process's figures, cluster.py
        self._local = True              # False with a shared log: enqueue skips the local queue
        self.log = None
        self.queue = None
        self.dispatcher = None
        self.counters = Counters()
        self.metrics = Metrics()        # rolling figures for `greenqueue stats`
        self._enqueue_middleware = []
        self._middleware = []
        self.started_at = None
        self.scheduler = None           # periodic tasks: see greenqueue/scheduler.py
        if eager is None:
            eager = os.environ.get("GREENQUEUE_EAGER", "") not in ("", "0")
        self.eager = _bool("eager", eager)
        if eager:  # an instance attribute: the normal push stays free of the check
            from .eager import push_eagerly
            self.backend = "memory"
            self.push = push_eagerly.__get__(self)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self):
        global _current
        if self.started_at is not None:
            raise GreenqueueError("this runtime was already started")
        if _current is not None:
            raise GreenqueueError("another greenqueue runtime is running in this process; "
                                  "stop it first")
        self.log = open_log(self.backend, path=self.path, fsync_interval=self.fsync_interval,
                            segment_size=self.segment_size, secret=self.secret,
                            lease=self.lease)
        self._local = not getattr(self.log, "shared", False)
        self.queue = TaskQueue(self.high_water_mark if self.backpressure else None,
                               self.low_water_mark, self.push_timeout)
        self.dispatcher = Dispatcher(self.queue, self.log, self.counters, self.concurrency)
        self.dispatcher.middleware = self._middleware
        self.dispatcher.metrics = self.metrics
        self.metrics.start(self.counters)
        if self._local:
            self._replay()
        else:  # the shared log is the queue: a fetcher feeds the workers with claims
            self.dispatcher.local = False
            self.fetcher = Fetcher(self.log, self.queue, self.dispatcher, self._crash_exhausted)
            self.dispatcher.on_idle = self.fetcher.worker_idle
            self.counters.dead = len(self.log.dead())
        _unique.restore(self)  # the unique keys of replayed and adopted tasks
        self.dispatcher.start()
        self.scheduler = Scheduler(self).start()
        if self.fetcher is not None:
            self.fetcher.start()
            self.publisher = Publisher(self).start()
        self.started_at = time.time()
        _current = self
        return self

    def _replay(self):
        """Queue what the log holds; settle attempts that a crash cut short."""
        crashed = self.log.crashed() if hasattr(self.log, "crashed") else ()
        if hasattr(self.log, "pending_packed"):  # a million envelopes stay packed until popped
            pending = self.log.pending_packed()
        else:
            pending = [env.pack() for env in self.log.pending()]
        if crashed:
            pending = [p for p in pending
                       if packed_id(p) not in crashed or not self._crash_exhausted(unpack(p))]
        self.queue.extend(pending)
        replayed = len(pending)
        self.counters.dead = len(self.log.dead())
        if replayed:
            logger.info("greenqueue: replayed %d pending task(s) from %s", replayed,
                        self.log.describe())

    def _crash_exhausted(self, env):
        """Bury a task whose crash-cut attempts used up its retries; else warn and keep it."""
        try:
            spec = _envelope.decode(env)[0]
        except DecodeError:
            return False  # the dispatcher buries it with the decode error when it comes up
        if env.attempt > spec.max_retries:
            message = f"process died during attempt {env.attempt}"
            logger.error("task %s (%s) is dead: %s", env.name, env.id, message)
            self.log.bury(env, describe_error(ProcessDied(message), message))
            return True
        logger.warning("task %s (%s) was cut short by a crash during attempt %d of %d; "
                       "running it again", env.name, env.id, env.attempt, spec.max_retries + 1)
        return False

    def stop(self, timeout=15.0):
        """Take no new task, give running ones ``timeout`` seconds, then close the log."""
        global _current
        if self.dispatcher is None or self.log is None:
            return
        try:
            if self.scheduler is not None:
                self.scheduler.stop()  # first: a follower takes the schedules over
            if self.fetcher is not None:
                self.fetcher.stop()
            self.dispatcher.stop(timeout)
            if self.fetcher is not None:
                self.fetcher.release()
        finally:
            if self.publisher is not None:
                self.publisher.stop()
            self.metrics.stop()
            if _current is self:
                _current = None
            self.log.close()
            self.log = None

    @property
    def running(self):
        return self.log is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def join(self, timeout=None):
        """Wait until no task is ready or running (delayed ones may remain); True if so.

        For tests and scripts: ``timeout`` seconds at most (None: no limit). A runtime that is
        not running refuses: no worker would ever drain its queue."""
        self._log()
        return self.dispatcher.join(timeout)

    # -- enqueue ------------------------------------------------------------------------------

    def push(self, spec, target, args, kwargs, delay=None, delay_until=None, priority=None,
             durable=False, task_id=None):
        """Log and queue one call of ``spec``; returns the task id. Hub only."""
        if self.log is None:
            raise GreenqueueError("the runtime is stopped; start it before enqueueing")
        if delay is None and delay_until is None:
            publish_at = 0.0
            if self.backpressure:
                self.queue.wait_for_room()
        elif delay_until is None and (delay.__class__ is int or delay.__class__ is float) \
                and 0 <= delay < 3e9:  # finite (NaN and inf fall through to due_time's errors)
            publish_at = time.time() + delay  # the common case, without due_time's checks
        else:
            publish_at = due_time(delay, delay_until)
        if priority is None:
            priority = spec.priority
        elif priority.__class__ is not int or not -PRIORITY_LIMIT <= priority < PRIORITY_LIMIT:
            raise TaskError(f"priority must be a 32-bit int, not {priority!r}")
        call = (target, args, kwargs, _log_context.get())
        try:
            payload = _dumps(call, PROTOCOL)
        except Exception:
            payload = _envelope.encode(*call, spec)  # cloudpickle, or an error naming the argument
        env = Envelope(task_id or new_id(), spec.name, payload, priority, publish_at, 0,
                       time.time())
        if self._enqueue_middleware:
            self._enqueue_with_middleware(env)
        else:
            self.log.append(env)
            if self._local:
                self.queue.push(env)
            self.counters.enqueued += 1
        if durable:
            self.log.sync()
        return env.id

    def _accept(self, env):
        self.log.append(env)
        if self._local:
            self.queue.push(env)
        self.counters.enqueued += 1

    def _enqueue_with_middleware(self, env):
        chain = self._enqueue_middleware

        def step(i):
            if i == len(chain):
                return self._accept(env)
            return chain[i](env, lambda: step(i + 1))
        return step(0)

    def add_middleware(self, middleware):
        """Add an object with ``on_enqueue(envelope, call_next)`` and/or
        ``on_perform(envelope, call_next)``; the first added is the outermost."""
        if not (hasattr(middleware, "on_enqueue") or hasattr(middleware, "on_perform")):
            raise ConfigError("middleware needs an on_enqueue or on_perform method")
        if hasattr(middleware, "on_enqueue"):
            self._enqueue_middleware.append(middleware.on_enqueue)
        self._middleware.append(middleware)

    # -- inspection and the dead set -------------------------------------------------------

    def schedules(self):
        """The periodic schedules, one dict each: name, task, schedule, next_run and
        last_run (epoch seconds or None), last_outcome, leader (whether this process runs
        them). For ``greenqueue stats``; outcomes are exact on the leader."""
        return self.scheduler.describe() if self.scheduler is not None else []

    def stats(self):
        c = self.counters
        queue = self.queue
        return {
            "ready": queue.ready if queue else 0,
            "delayed": len(queue.delayed) if queue else 0,
            "in_flight": self.dispatcher.in_flight if self.dispatcher else 0,
            "enqueued": c.enqueued, "processed": c.processed, "failed": c.failed,
            "retried": c.retried, "dead": c.dead, "interrupted": c.interrupted,
        }

    def dead(self):
        """The dead set: a list of DeadTask (envelope, error dict), oldest failure first."""
        return sorted(self._log().dead(), key=lambda d: d.error.get("failed_at", 0))

    def retry_dead(self, task_id):
        """Take a task out of the dead set and run it again with a fresh retry budget."""
        if not self.retry_dead_many([task_id]):
            raise KeyError(f"no dead task with id {task_id!r}")
        return task_id

    def retry_dead_many(self, task_ids):
        """``retry_dead`` for many ids with one read of the dead set (``greenqueue dead retry
        --all`` sends thousands); returns the ids that were dead, skipping the others."""
        dead = {d.id: d for d in self._log().dead()}
        retried = []
        for task_id in task_ids:
            found = dead.pop(task_id, None)
            if found is None:
                continue
            env = found.envelope.replace(attempt=0, publish_at=0.0)
            self.log.append(env)
            if self._local:
                self.queue.push(env)
            self.counters.dead -= 1
            retried.append(task_id)
        return retried

    def purge_dead(self, task_ids=None):
        """Forget dead tasks (all of them by default); returns how many went."""
        ids = [d.id for d in self._log().dead()] if task_ids is None else list(task_ids)
        dead_ids = {d.id for d in self.log.dead()}
        purged = 0
        for task_id in ids:
            if task_id in dead_ids:
                self.log.remove(task_id)
                purged += 1
        self.counters.dead -= purged
        return purged

    def _log(self):
        if self.log is None:
            raise GreenqueueError("the runtime is not running")
        return self.log


# -- the process-wide default runtime ---------------------------------------------------------

def current_runtime():
    """The running runtime that enqueue uses, or None."""
    return _current


def configure(**settings):
    """Set the keyword arguments of the default runtime (checked now, used at its start)."""
    Runtime(**{**_settings, **settings})  # validate
    _settings.update(settings)


def start(**settings):
    """Start the default runtime (with configure()'s settings updated by these)."""
    if settings:
        configure(**settings)
    runtime = Runtime(**_settings).start()
    _warn_if_unpatched(runtime)
    return runtime


def stop(timeout=15.0):
    """Stop the current runtime, if any."""
    if _current is not None:
        _current.stop(timeout)


def autostart():
    """Start the default runtime on the first enqueue of an app that never started one."""
    runtime = start()
    logger.info("greenqueue: started the default runtime on first enqueue; tasks are kept in %s",
                runtime.log.describe())
    atexit.register(runtime.stop)
    return runtime


def _warn_if_unpatched(runtime):
    if runtime.backend == "memory":
        return
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        warnings.warn(
            "greenqueue runs tasks in greenlets, but gevent has not monkey-patched this process: "
            "a task doing blocking I/O (sockets, time.sleep) will stall every other task and the "
            "app. Call gevent.monkey.patch_all() first thing, or serve with `greenqueue run`.",
            RuntimeWarning, stacklevel=3)
