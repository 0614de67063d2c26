"""The worker greenlets: pop, run under timeout, then acknowledge, retry or bury.

Duties:
- keep ``concurrency`` long-lived workers (no greenlet per task: spawning costs ~20 us);
  a worker drains ready tasks back to back and yields to the hub every ``YIELD_EVERY`` seconds
  so requests served by the same process keep flowing;
- one scheduler greenlet sleeps until the earliest delayed task is due (one timer in all);
- record each attempt's start in the log before the task body runs, its end after;
- on failure, retry with the task's backoff or, past ``max_retries``, bury in the dead set;
- on stop, take no new task, wait for running ones until the deadline, then interrupt them
  with :class:`Shutdown`: an interrupted attempt is re-logged as pending, not counted.

Hub-only, like the queue: nothing here is thread-safe.
"""
import logging
import time
import traceback

from collections import deque

import gevent
from gevent.event import Event
from gevent.hub import Waiter
from gevent.timeout import Timeout

from .context import _current_task, _log_context
from .envelope import decode
from .errors import DecodeError, Shutdown, TaskTimeout
from .metrics import Metrics
from .task_figures import measured_run

logger = logging.getLogger(__name__)
YIELD_EVERY = 0.001  # seconds of task work between chances for the hub to poll for I/O


def _nothing():
    pass


class Counters:
    """Monotonic counts since start, read by ``Runtime.stats()``."""

    __slots__ = ("enqueued", "processed", "failed", "retried", "dead", "interrupted")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class Dispatcher:
    def __init__(self, queue, log, counters, concurrency=100):
        self.queue = queue
        self.log = log
        self.counters = counters
        self.concurrency = concurrency
        self.middleware = []        # objects with on_perform(envelope, call_next)
        self.metrics = Metrics()    # the runtime hands in its own; sampled, see metrics.py
        self.running = {}           # task id -> envelope, for stats and shutdown
        self.first_failed = {}      # task id -> time of its first failure here (dead show)
        self.figures = None         # per-name TaskFigures when metrics are exported
        self.started = {}           # worker greenlet -> [envelope it started last] (hub_monitor)
        self.local = True           # False with a shared log: retries go to the log only
        self.on_idle = None         # called when a worker finds nothing to run (fetcher.py)
        self.stopping = False
        self.drained = Event()
        self._workers = []
        self._scheduler = None

    @property
    def in_flight(self):
        return len(self.running)

    def start(self):
        self.slice_started = time.perf_counter()
        self.hub = gevent.get_hub()
        self._parked = deque()         # Waiters of workers that used up the budget
        self._keep_polling = self.hub.loop.idle(ref=False)
        # after every poll of the loop the hub has served I/O: the workers' budget restarts
        self._polled = self.hub.loop.check(ref=False)
        self._polled.start(self._hub_polled)
        self._workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]
        self._scheduler = gevent.spawn(self._schedule)

    def _hub_polled(self):
        self.slice_started = time.perf_counter()
        if self._parked:  # one worker takes the fresh budget; the rest wait for later polls
            self.hub.loop.run_callback(self._parked.popleft().switch, None)
            if not self._parked:
                self._keep_polling.stop()

    def _await_poll(self):
        """Park until the hub has polled for I/O once more and it is this worker's turn."""
        if not self._parked:
            self._keep_polling.start(_nothing)  # an active idle watcher: the poll won't block
        waiter = Waiter()
        self._parked.append(waiter)
        try:
            waiter.get()
            # the budget starts now: requests served since the poll must not have used it up
            self.slice_started = time.perf_counter()
        finally:
            if waiter in self._parked:  # interrupted (stop): leave the line
                self._parked.remove(waiter)

    def stop(self, timeout):
        """Stop popping, let running tasks finish until ``timeout``, then interrupt them."""
        self.stopping = True
        self.queue.wake_all()
        self.queue.delayed_changed.set()
        gevent.joinall(self._workers, timeout=timeout)
        left = [w for w in self._workers if not w.dead]
        if left:
            logger.warning("interrupting %d task(s) still running after %g s; they stay in "
                           "the log and run again on the next start", len(self.running), timeout)
            gevent.killall(left, Shutdown, block=True, timeout=5)
        self._scheduler.kill(block=True, timeout=5)
        for watcher in (self._polled, self._keep_polling):
            watcher.stop()
            watcher.close()

    def abandon_running(self):
        """Log every running attempt as interrupted (not counted), for an exit with no drain:
        a second SIGTERM. The tasks run again on the next start with their retry budget."""
        for env in list(self.running.values()):
            self._interrupted(env)

    def join(self, timeout=None):
        """Wait until no task is ready or running; True if that happened within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.queue.promote_due()
            if not self.queue.ready and not self.running:
                return True
            self.drained.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.drained.wait(remaining if remaining is None else min(remaining, 0.5))

    # -- workers ------------------------------------------------------------------------------

    def _work(self):
        """One worker's loop. The budget of back-to-back task time is shared by all workers
        and restarts only when the hub has polled for I/O (``_hub_polled``): a worker past it
        parks until the next poll (not merely behind other callbacks), so requests wait at
        most about YIELD_EVERY, however many workers are busy."""
        pop, run, clock, metrics = self.queue.pop, self._run, time.perf_counter, self.metrics
        started = self.started[gevent.getcurrent()] = [None]  # one store per task, never cleared
        try:
            while not self.stopping:
                env = pop()
                if env is None:
                    if not self.running:
                        self.drained.set()
                    if self.on_idle is not None:
                        self.on_idle()
                    self.queue.wait()
                    continue
                started[0] = env
                if metrics.sample_due:
                    metrics.sample_wait(env)
                if self.figures is None:
                    run(env)
                else:
                    measured_run(self, env)
                if clock() - self.slice_started >= YIELD_EVERY:
                    self._await_poll()
        except Shutdown:
            pass  # stop() interrupted this worker's task; _run has logged it as interrupted

    def _schedule(self):
        queue = self.queue
        while not self.stopping:
            due = queue.next_due()
            queue.delayed_changed.clear()
            wait = None if due is None else due - queue.now()
            if wait is None or wait > 0:
                queue.delayed_changed.wait(wait)
            queue.promote_due()

    def _run(self, env):
        """Run one attempt; its outcome: "processed", "retried", "dead" or None (interrupted,
        or failed in a way that stays uncounted)."""
        task_id = env.id
        outcome = None
        self.running[task_id] = env
        try:
            self.log.begin((env,))
            try:
                spec, args, kwargs, context = decode(env)
            except DecodeError as exc:
                self._bury(env.replace(attempt=env.attempt + 1), exc)
                return "dead"
            _current_task.set(env)
            _log_context.set(context)
            timer = Timeout.start_new(spec.timeout) if spec.timeout else None
            try:
                if self.middleware:
                    self._perform_with_middleware(env, spec, args, kwargs)
                else:
                    spec.invoke(args, kwargs)
            except Shutdown:
                self._interrupted(env)
                raise
            except Timeout as exc:
                if exc is timer:
                    exc = TaskTimeout(f"task {env.name} ran past its timeout of {spec.timeout} s")
                outcome = self._failed(env, spec, exc)  # else the task's own Timeout escaped
            except Exception as exc:
                outcome = self._failed(env, spec, exc)
            else:
                self.log.remove(task_id)
                self.counters.processed += 1
                outcome = "processed"
                if self.first_failed:
                    self.first_failed.pop(task_id, None)
            finally:
                if timer is not None:
                    timer.close()
                _current_task.set(None)
                _log_context.set(None)
        finally:
            del self.running[task_id]
        return outcome

    def _perform_with_middleware(self, env, spec, args, kwargs):
        chain = [m.on_perform for m in self.middleware if hasattr(m, "on_perform")]

        def step(i):
            if i == len(chain):
                return spec.invoke(args, kwargs)
            return chain[i](env, lambda: step(i + 1))
        return step(0)

    # -- outcomes -----------------------------------------------------------------------------

    def _failed(self, env, spec, exc):
        self.counters.failed += 1
        attempt = env.attempt + 1
        if len(self.first_failed) > 100000:  # retries taken over by other processes
            self.first_failed.clear()
        self.first_failed.setdefault(env.id, time.time())
        interval = None
        if attempt <= spec.max_retries:
            try:
                interval = spec.retry_interval(exc, attempt)
                if interval is not None and interval is not False:
                    interval = float(interval)
            except Exception:
                logger.exception("retry_interval of %s failed or returned no number; giving "
                                 "up on %s", env.name, env.id)
                interval = None
        if interval is None or interval is False:
            self._bury(env.replace(attempt=attempt), exc)
            return "dead"
        retry = env.replace(attempt=attempt, publish_at=self.queue.now() + interval)
        logger.warning("task %s (%s) failed on attempt %d, retrying in %.1f s: %s: %s",
                       env.name, env.id, attempt, interval, type(exc).__name__, exc)
        self.log.append(retry)
        if self.local:  # else another process may well take it: the shared log is the queue
            self.queue.push(retry)
        self.counters.retried += 1
        return "retried"

    def _bury(self, env, exc):
        error = describe_error(exc)
        first = self.first_failed.pop(env.id, None)
        if first is not None:  # unknown when earlier attempts failed before a restart
            error["first_failed_at"] = first
        logger.error("task %s (%s) is dead after %d attempt(s): %s: %s\n%s", env.name, env.id,
                     env.attempt, error["type"], error["message"], error["traceback"])
        self.log.bury(env, error)
        self.counters.dead += 1

    def _interrupted(self, env):
        self.log.append(env)
        self.counters.interrupted += 1


def describe_error(exc, message=None):
    """The dead set's record of an exception: type, message, traceback text, time."""
    return {
        "type": type(exc).__name__,
        "message": message if message is not None else str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "failed_at": time.time(),
    }
