"""Periodic tasks: ``@greenqueue.periodic(every=|cron=)`` and ``greenqueue.schedule(...)``.

Duties:
- definitions: check a schedule when it is defined (an invalid cron line or time zone fails at
  import, not at 3 a.m.) and keep it in a process-wide registry, as tasks are;
- one scheduler greenlet per runtime, sleeping on one timer until the earliest due occurrence;
  each occurrence is an ordinary enqueue (retries, timeout, dead set, middleware all apply);
- leadership: of the processes sharing a data directory only the one holding an exclusive
  ``flock`` on ``<data dir>/scheduler.lock`` enqueues; the others retry the lock every
  ``TAKEOVER_POLL`` seconds, so when the leader dies (the kernel drops its lock) another takes
  over within about that long. A process with no schedule never touches the lock;
- memory: the leader records each schedule's last occurrence in ``<data dir>/schedules.json``
  (written to a temporary file, fsync'd, renamed), so a restart inside an interval does not run
  it again, and occurrences missed while nothing ran run once on start (``catch_up=False``
  skips them). With no data directory (memory backend) the process leads and remembers
  nothing across restarts;
- a shared log (Redis, PostgreSQL) is one queue for many hosts, so leadership and the record
  live on its server instead (``log.lead()``, ``load_state()``, ``save_state()``; see
  greenqueue/log/shared.py): one leader in the whole cluster, and when it dies another takes
  over once its lease runs out (Redis) or its connection drops (PostgreSQL).

Time comes from the runtime's queue clock (``TaskQueue.now``), so a test's fake clock drives
schedules as it drives delays. Hub-only, like the queue.
"""
import datetime as _dt
import fcntl
import inspect
import json
import logging
import math
import os
import time

import gevent
from gevent.event import Event

from .errors import ConfigError

logger = logging.getLogger(__name__)
TAKEOVER_POLL = 1.0     # seconds between a follower's attempts at the leader lock
MAX_SLEEP = 30.0        # re-read the clock at least this often (wall-clock jumps, suspend)
LOCK_NAME = "scheduler.lock"
STATE_NAME = "schedules.json"
_registry = {}          # name -> Schedule
_changed = []           # Events of running schedulers: set when the registry changes


class Schedule:
    """A task, its arguments, and when to enqueue them: ``every`` seconds or a ``cron`` line."""

    def __init__(self, task, every=None, cron=None, tz=None, args=(), kwargs=None, name=None,
                 catch_up=True):
        spec = getattr(task, "_spec", task)  # a Task class carries its spec
        if not callable(getattr(task, "enqueue", None)) or not hasattr(spec, "name"):
            raise ConfigError(f"schedule a greenqueue task (@greenqueue.task or a "
                              f"greenqueue.Task subclass), not {task!r}")
        if (every is None) == (cron is None):
            raise ConfigError("give a schedule every=SECONDS or cron=LINE (one of them)")
        if every is not None:
            if isinstance(every, _dt.timedelta):
                every = every.total_seconds()
            if isinstance(every, bool) or not isinstance(every, (int, float)) \
                    or not 0 < every < math.inf:
                raise ConfigError(f"every must be a positive number of seconds or a "
                                  f"timedelta, not {every!r}")
            if tz is not None:
                raise ConfigError("tz applies to cron schedules; every= counts seconds")
        self.zone = _zone(tz)
        if cron is not None:
            from croniter import croniter
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise ConfigError(f"invalid cron line {cron!r} (expected five fields like "
                                  f"'*/5 * * * *')")
        kwargs = dict(kwargs or {})
        _check_call(spec, task, args, kwargs)
        self.task, self.spec = task, spec
        self.every = None if every is None else float(every)
        self.cron, self.tz = cron, tz
        self.args, self.kwargs = tuple(args), kwargs
        self.name = name or spec.name
        self.catch_up = bool(catch_up)

    def next_after(self, t):
        """The first occurrence strictly after epoch ``t``."""
        if self.every is not None:
            return t + self.every
        from croniter import croniter
        return croniter(self.cron, _dt.datetime.fromtimestamp(t, self.zone)).get_next(float)

    def latest_until(self, last, now):
        """The latest occurrence in ``(last, now]`` (callers know there is one)."""
        if self.every is not None:
            return last + math.floor((now - last) / self.every) * self.every
        from croniter import croniter
        return croniter(self.cron, _dt.datetime.fromtimestamp(now + 1e-3, self.zone)
                        ).get_prev(float)

    def describe(self):
        return f"every {self.every:g} s" if self.every is not None else \
            f"cron {self.cron!r}" + (f" ({self.tz})" if self.tz else "")

    def _same(self, other):
        return (self.spec.name, self.every, self.cron, self.tz, self.args, self.kwargs) == \
            (other.spec.name, other.every, other.cron, other.tz, other.args, other.kwargs)


def _zone(tz):
    if tz is None:
        return _dt.timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigError(f"unknown time zone {tz!r} (use an IANA name like 'Europe/Berlin')"
                          f": {exc}") from None


def _check_call(spec, task, args, kwargs):
    fn = getattr(spec, "fn", None)
    if fn is None:
        return
    try:
        signature = inspect.signature(fn)
        if isinstance(task, type):  # Task.perform: bind self too
            args = (None, *args)
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"schedule of {spec.name}: the arguments do not fit the task "
                          f"({exc}); use greenqueue.schedule(task, args=..., kwargs=...)") from None
    except ValueError:
        pass


# -- definitions ------------------------------------------------------------------------------

def schedule(task, *, every=None, cron=None, tz=None, args=(), kwargs=None, name=None,
             catch_up=True):
    """Enqueue ``task(*args, **kwargs)`` every ``every`` seconds or on a ``cron`` line (in
    ``tz``, default UTC). ``name`` (default: the task's) identifies it in the recorded state."""
    entry = Schedule(task, every, cron, tz, args, kwargs, name, catch_up)
    old = _registry.get(entry.name)
    if old is not None and not old._same(entry):
        raise ConfigError(f"a different schedule is already named {entry.name!r}; "
                          f"give this one name=...")
    _registry[entry.name] = entry
    for event in _changed:
        event.set()
    return entry


def periodic(every=None, *, cron=None, tz=None, catch_up=True, name=None):
    """Decorate a task that takes no required argument: ``@greenqueue.periodic(every=300)``
    above ``@greenqueue.task``, or on a ``greenqueue.Task`` subclass."""
    def decorate(task):
        schedule(task, every=every, cron=cron, tz=tz, name=name, catch_up=catch_up)
        return task
    return decorate


def unschedule(name):
    """Forget the schedule named ``name`` (its recorded state stays for a later return)."""
    _registry.pop(name, None)


def registered():
    return dict(_registry)


# -- running them -----------------------------------------------------------------------------

class Scheduler:
    """The scheduler greenlet of one runtime: leader election, one timer, recorded state."""

    def __init__(self, runtime):
        self.runtime = runtime
        log = runtime.log
        self.directory = log.path if hasattr(log, "chain") and hasattr(log, "path") else None
        self.shared = log if getattr(log, "shared", False) else None
        self.leader = self.directory is None and self.shared is None
        self.state = {}             # name -> {"last", "run_at", "task_id", "outcome"}
        self.due = {}               # name -> epoch of the next occurrence (leader only)
        self._lock_fd = None
        self._wake = Event()
        self._greenlet = None
        self._stopping = False

    @property
    def now(self):
        return self.runtime.queue.now

    def start(self):
        _changed.append(self._wake)
        self._greenlet = gevent.spawn(self._loop)
        return self

    def wake(self):
        """Re-read the clock and the registry now (a fake clock moved, for instance)."""
        self._wake.set()

    def run_due(self):
        """Enqueue what is due right now, in the calling greenlet (``TestRuntime.drain``)."""
        if _registry and (self.leader or self._try_lead()):
            self._tick()
        self._wake.set()

    def stop(self):
        self._stopping = True
        if self._wake in _changed:
            _changed.remove(self._wake)
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock: a follower takes over at once
            self._lock_fd = None
        if self.shared is not None:
            self.shared.resign()

    def _loop(self):
        while not self._stopping:
            self._wake.clear()
            if not _registry:
                self._wake.wait()
                continue
            if self.leader and self.shared is not None and not self.shared.leading:
                self.leader = False  # the lease ran out under us: another process may lead
                logger.warning("greenqueue: this process no longer runs the periodic schedules")
            if not self.leader and not self._try_lead():
                self._wake.wait(TAKEOVER_POLL)
                continue
            wait = self._tick()
            self._wake.wait(min(max(wait, 0.0), MAX_SLEEP))

    def _try_lead(self):
        if self.shared is not None:
            if not self.shared.lead():
                return False
            self.leader = True
            self.state = self._read_state()
            self.due = {}
            logger.info("greenqueue: this process (pid %d) now runs the periodic schedules of "
                        "%s", os.getpid(), self.shared.describe())
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(os.path.join(self.directory, LOCK_NAME),
                                    os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.leader = True
        self.state = self._read_state()
        self.due = {}
        logger.info("greenqueue: this process (pid %d) now runs the periodic schedules of %s",
                    os.getpid(), self.directory)
        return True

    def _tick(self):
        """Enqueue what is due; return real seconds until the next occurrence."""
        now = self.now()
        changed = False
        for name, entry in list(_registry.items()):
            due = self.due.get(name)
            record = self.state.setdefault(name, {})
            if due is None:  # first sight in this leadership: from the record, or from now
                last = record.get("last")
                if last is None:
                    record["last"] = last = now
                    changed = True
                due = entry.next_after(last)
                catch_up = entry.catch_up
            else:
                last, catch_up = record["last"], True
            if due <= now:
                latest = entry.latest_until(last, now)
                if catch_up:
                    self._enqueue(entry, record)
                record["last"] = latest
                due = entry.next_after(latest)
                changed = True
            self.due[name] = due
        if changed:
            self._write_state()
        upcoming = [self.due[n] for n in _registry if n in self.due]
        return (min(upcoming) - now) if upcoming else MAX_SLEEP

    def _enqueue(self, entry, record):
        record["run_at"] = time.time()
        try:
            record["task_id"] = entry.task.enqueue(*entry.args, **entry.kwargs)
            record["outcome"] = "enqueued"
        except Exception as exc:  # noqa: BLE001 - a schedule must outlive a bad occurrence
            logger.exception("periodic %s: enqueue failed", entry.name)
            record["task_id"] = None
            record["outcome"] = f"enqueue failed: {type(exc).__name__}: {exc}"

    # -- the recorded state ------------------------------------------------------------------

    def _read_state(self):
        if self.shared is not None:
            try:
                return self.shared.load_state()
            except Exception:  # noqa: BLE001 - unreachable now; the record is read again later
                logger.exception("periodic schedules: cannot read their state")
                return {}
        if self.directory is None:
            return self.state
        try:
            with open(os.path.join(self.directory, STATE_NAME)) as f:
                state = json.load(f)
            return state if isinstance(state, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("periodic schedules: %s unreadable (%s); starting afresh",
                           STATE_NAME, exc)
            return {}

    def _write_state(self):
        if self.shared is not None:
            try:
                self.shared.save_state(self.state)
            except Exception:  # noqa: BLE001 - a schedule must outlive an outage
                logger.exception("periodic schedules: cannot record their state")
            return
        if self.directory is None:
            return
        path = os.path.join(self.directory, STATE_NAME)
        temp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temp, "w") as f:
                json.dump(self.state, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(temp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            logger.exception("periodic schedules: cannot record their state in %s", path)

    # -- for greenqueue stats -----------------------------------------------------------------

    def describe(self):
        """One dict per schedule: name, task, when, next_run, last_run, last_outcome, leader."""
        state = self.state if self.leader else self._read_state()
        rows = []
        for name, entry in sorted(_registry.items()):
            record = state.get(name, {})
            next_run = self.due.get(name) if self.leader else None
            if next_run is None and record.get("last") is not None:
                next_run = entry.next_after(record["last"])
            rows.append({
                "name": name, "task": entry.spec.name, "schedule": entry.describe(),
                "next_run": next_run, "last_run": record.get("run_at"),
                "last_outcome": self._outcome(record), "leader": self.leader,
            })
        return rows

    def _outcome(self, record):
        task_id, outcome = record.get("task_id"), record.get("outcome")
        if task_id is None or not self.leader:
            return outcome
        runtime = self.runtime
        if task_id in runtime.dispatcher.running:
            return "running"
        if any(d.id == task_id for d in runtime.log.dead()):
            return "dead"
        pending = _pending_lookup(runtime.log)
        if pending is not None:
            return "pending" if task_id in pending else "done"
        return outcome


def _pending_lookup(log):
    """A container of the log's pending ids, without copying a million envelopes if possible."""
    for attr in ("pending_", "_pending"):  # the disk and memory logs keep dicts by id
        found = getattr(log, attr, None)
        if isinstance(found, dict):
            return found
    return None
