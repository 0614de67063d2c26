"""What the shared backends (Redis, PostgreSQL) have in common: claims, leases, batched acks.

A shared log is the queue of many processes, not the memory of one. Beyond the contract in
``log/__init__.py`` it offers:

- ``shared = True``: the runtime then enqueues into the log only (not into its local queue),
  and a fetcher (``greenqueue/fetcher.py``) feeds the local dispatcher from ``claim()``;
- ``claim(limit)``: up to ``limit`` due tasks, taken in one round trip under a lease of
  ``lease`` seconds, as ``[(envelope, crashed)]``. ``crashed`` says that a lease ran out under
  an earlier claimer (a process died or stalled): that attempt is already counted in
  ``envelope.attempt``, as the disk log counts an attempt a crash cut short;
- ``wait(timeout)``: block on the server until work may have arrived, at most ``timeout``;
- ``hold_key(task_id, key, unique_for)``: unique keys held on the server for the whole cluster;
- ``begin()`` does nothing: the claim is the durable record that an attempt started.

This base class owns the parts that do not depend on the server:

- ``remove`` and ``bury`` go to an outbox that one flusher greenlet sends in one round trip
  (acknowledging a hundred tasks costs one round trip, not a hundred). A write that must be
  synchronous (``append``) carries the outbox with it, and every read flushes first, so a
  process reads its own writes, in order. A crash before a flush runs those tasks again:
  at-least-once, as the disk log's batched removes;
- a renewer greenlet extends the leases of the tasks this process holds every ``lease / 3``
  seconds. A lease found lost (the process stalled past it, and another may run the task
  too) is logged and counted in ``lease_lost``, and this process's outcome for that task
  (done, retry, burial, interruption) is dropped: the task is another process's now, and
  writing it would undo that process's work (resurrect a finished task, say);
- ``append`` is a group commit: it returns once its task is stored, but the appends of
  greenlets that enqueue while a round trip is in flight share the next one (a hundred
  requests enqueueing at once cost a few round trips, not a hundred in a row);
- ``append`` retries a lost connection for ``retry_for`` seconds (short and bounded), then
  raises BackendUnavailable: an enqueue never drops a task silently;
- one leader for the whole cluster (the periodic scheduler): ``lead()`` takes or keeps it,
  the renewer keeps it alive with the leases, ``resign()`` gives it up; ``load_state()`` and
  ``save_state(dict)`` keep the leader's small JSON record on the server.

Hub-only, like the rest of the runtime; subclasses do their I/O through gevent-cooperative
clients (redis-py on patched sockets, psycopg >= 3.1.14).
"""
import json
import logging
import time

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from ..envelope import unpack
from ..errors import BackendUnavailable, ConfigError, GreenqueueError
from . import Log
from .figures import ClusterFigures

logger = logging.getLogger(__name__)
MAX_BATCH = 1000          # ids per round trip: keeps one script call or statement small


class SharedLog(ClusterFigures, Log):
    shared = True
    connection_errors = ()     # the client library's "server went away" exceptions
    next_change = None         # after an empty claim: seconds until a delayed task comes due
                               # or a lease runs out (None: nothing scheduled)

    def __init__(self, url, lease=30.0, retry_for=1.0, **_ignored):
        if not lease > 0:
            raise ConfigError(f"lease must be a positive number of seconds, not {lease!r}")
        self.url = url
        self.lease = float(lease)
        self.retry_for = retry_for
        self.lease_lost = 0
        self._lost_ids = set()      # leases lost under running tasks: their outcome is dropped
        self.leading = False        # this process leads the cluster's schedules
        self._held = {}             # task id -> None: claimed here, not yet settled on the server
        self._outbox = []           # ("remove", id) / ("bury", envelope, error), in call order
        self._sending = Semaphore()  # one write in flight at a time: order on the server
        self._batch = _Batch()       # appends waiting for the next round trip
        self._crowded = False        # the last batch had company: wait a turn for more
        self._kick = Event()
        self._closed = False
        self._greenlets = []
        self._unique = {}           # task id -> (unique key, unique_for) for its coming append

    def _start_helpers(self):
        """Call at the end of a subclass's __init__, once connected."""
        self._greenlets = [gevent.spawn(self._flush_loop), gevent.spawn(self._renew_loop)]

    # -- to implement per server ------------------------------------------------------------

    def _send(self, ops, envs):
        """Apply the outbox ``ops`` in order, then append ``envs``, in one round trip."""
        raise NotImplementedError

    def _append_unique(self, env, key, unique_for):
        """Store ``env`` holding ``key`` unless a live holder has it; return that holder's id."""
        raise NotImplementedError

    def _claim(self, limit):
        """[(packed envelope, crashed)] claimed for ``self.owner`` until now + lease."""
        raise NotImplementedError

    def _renew(self, ids):
        """Extend our leases on ``ids``; return the ids whose claim is no longer ours."""
        raise NotImplementedError

    def wait(self, timeout):
        """Block on the server until work may have arrived, ``timeout`` seconds at most."""
        raise NotImplementedError

    def _holds(self, task_id):
        raise NotImplementedError

    def _lead(self):
        """Take or extend the leadership for ``lease`` seconds; True if this process has it."""
        raise NotImplementedError

    def _resign(self):
        raise NotImplementedError

    def _load_state(self):
        raise NotImplementedError

    def _save_state(self, data):
        raise NotImplementedError

    def reconnect(self):
        """Drop broken connections so that the next try makes new ones."""

    def _close(self):
        raise NotImplementedError

    # -- the contract -----------------------------------------------------------------------

    def append(self, env):
        if self._lost_ids and self._dropped(env.id):
            return
        if self._unique and env.id in self._unique:
            return self._append_held(env, *self._unique.pop(env.id))
        batch = self._batch
        batch.append(env)
        if len(batch) > 1:  # another greenlet leads this batch: wait for its round trip
            batch.done.wait()
            if batch.error is not None:
                raise BackendUnavailable(str(batch.error)) from batch.error
            return
        try:
            if self._crowded:  # greenlets enqueue together: let those runnable join first
                gevent.sleep(0)
            with self._sending:  # the trip in flight ends; meanwhile others join this batch
                self._batch = _Batch()
                self._crowded = len(batch) > 1
                self._send_or_keep(batch, "enqueue")
        except BaseException as exc:  # also an interruption (timeout, kill) of the leader
            if self._batch is batch:
                self._batch = _Batch()
            batch.error = exc if isinstance(exc, Exception) else BackendUnavailable(
                "the enqueue was interrupted before it was stored")
            raise
        finally:
            batch.done.set()

    def hold_key(self, task_id, key, unique_for):
        """Make the coming ``append`` of ``task_id`` store it only if no pending task of the
        cluster holds ``key`` (for ``unique_for`` seconds, None: as long as it is pending);
        if one does, that append raises KeyHeld naming it. Checked and stored in one atomic
        step on the server, so two hosts enqueueing the same key at once store one task."""
        self._unique[task_id] = (key, unique_for)

    def forget_key(self, task_id):
        """Drop a ``hold_key`` whose append never came (middleware skipped it, say)."""
        self._unique.pop(task_id, None)

    def _append_held(self, env, key, unique_for):
        with self._sending:
            if self._outbox:
                self._send_or_keep((), "enqueue")
            holder = self._retrying("enqueue", self._append_unique, env, key, unique_for)
        if holder is not None and holder != env.id:  # (our own id: a retried call had landed)
            raise KeyHeld(holder)

    def release(self, envs):
        """Append claimed tasks back as they were, in one round trip (a graceful stop)."""
        with self._sending:
            self._send_or_keep(envs, "release")

    def holds(self, task_id):
        """Whether ``task_id`` is still pending (ready, delayed or claimed) on the server."""
        return self._read(self._holds, task_id)

    def delayed(self, limit):
        """(how many tasks wait for their due time on the server, the first ``limit`` of them
        by due time as Envelopes): the cluster's delayed tasks, for the dashboard."""
        total, packed = self._read(self._delayed, limit)
        return total, [unpack(p) for p in packed]

    def _delayed(self, limit):
        raise NotImplementedError

    def lead(self):
        """Become or stay the one leader of every process sharing this log; True if so."""
        try:
            self.leading = bool(self._lead())
        except self.connection_errors + (GreenqueueError,) as exc:  # also: cannot reconnect
            self.reconnect()
            logger.warning("leadership on %s: %s", self.describe(), exc)
            self.leading = False
        return self.leading

    def resign(self):
        if self.leading:
            self.leading = False
            try:
                self._resign()
            except self.connection_errors:
                pass  # it runs out with the lease

    def load_state(self):
        raw = self._read(self._load_state)
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}
        return state if isinstance(state, dict) else {}

    def save_state(self, state):
        with self._sending:
            self._retrying("save state", self._save_state, json.dumps(state))

    def begin(self, envs):
        pass  # the claim recorded the attempt's start; a lease that runs out counts it

    def remove(self, task_id):
        if self._lost_ids and self._dropped(task_id):
            return
        self._outbox.append(("remove", task_id))
        self._kick.set()

    def bury(self, env, error):
        if self._lost_ids and self._dropped(env.id):
            return
        self._outbox.append(("bury", env, error))
        self._kick.set()

    def sync(self):
        self.flush()

    def flush(self):
        """Send the outbox now (raises BackendUnavailable if the server stays away)."""
        with self._sending:
            if self._outbox:
                self._send_or_keep((), "acknowledge")

    def _send_or_keep(self, envs, what):
        """Send the outbox and ``envs``; on failure keep the outbox, in order, for later."""
        ops, self._outbox = self._outbox, []
        try:
            self._retrying(what, self._send, ops, envs)
        except BaseException:
            self._outbox[:0] = ops
            raise
        held = self._held
        for op in ops:
            held.pop(op[1] if op[0] == "remove" else op[1].id, None)
        for env in envs:
            held.pop(env.id, None)

    def _read(self, fn, *args):
        """A read of the server after this process's own writes, on the writers' turn."""
        with self._sending:
            if self._outbox:
                self._send_or_keep((), "read")
            return self._retrying("read", fn, *args)

    def claim(self, limit):
        claimed = [(unpack(packed), bool(crashed)) for packed, crashed in self._claim(limit)]
        for env, _ in claimed:
            self._held[env.id] = None
        return claimed

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._kick.set()
        with self._sending:  # no round trip in flight: a kill must not cut one in half (the
            gevent.killall(self._greenlets, block=True, timeout=5)  # connection would be lost)
        self.resign()
        self.unpublish()
        try:
            self.flush()
        except BackendUnavailable as exc:
            logger.error("closing %s: %d acknowledgement(s) not sent (the tasks will run "
                         "again): %s", self.describe(), len(self._outbox), exc)
        self._close()

    # -- helpers ----------------------------------------------------------------------------

    def _retrying(self, what, fn, *args):
        """``fn(*args)``, retried on connection errors for ``retry_for`` s with backoff."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.02
        while True:
            try:
                return fn(*args)
            except self.connection_errors as exc:
                self.reconnect()
                if self._closed or time.monotonic() + pause > deadline:
                    raise BackendUnavailable(
                        f"{what}: {self.describe()} is unreachable: {exc}") from exc
                gevent.sleep(pause)
                pause = min(pause * 2, 0.25)

    def _flush_loop(self):
        pause = 0.1
        while not self._closed:
            self._kick.wait()
            self._kick.clear()
            try:
                self.flush()
                pause = 0.1
            except BackendUnavailable as exc:
                logger.warning("%s; retrying in %.1f s", exc, pause)
                gevent.sleep(pause)
                pause = min(pause * 2, 5.0)
                self._kick.set()
            except Exception:
                logger.exception("sending acknowledgements to %s", self.describe())
                gevent.sleep(pause)
                self._kick.set()

    def _renew_loop(self):
        while not self._closed:
            gevent.sleep(self.lease / 3)
            try:
                with self._sending:  # an ack in flight must not look like a lost lease
                    held = list(self._held)
                    for i in range(0, len(held), MAX_BATCH):
                        self._lost(self._renew(held[i:i + MAX_BATCH]))
            except self.connection_errors as exc:
                self.reconnect()
                logger.warning("renewing leases on %s: %s", self.describe(), exc)
            except Exception:
                logger.exception("renewing leases on %s", self.describe())
            try:
                if self.leading and not self.lead():
                    logger.warning("lost the leadership on %s", self.describe())
            except Exception:  # the renewer must outlive anything: it keeps the leases
                logger.exception("renewing the leadership on %s", self.describe())

    def _dropped(self, task_id):
        if task_id not in self._lost_ids:
            return False
        self._lost_ids.discard(task_id)
        logger.warning("task %s ended here after its lease ran out; another process owns it "
                       "now, so this outcome is not recorded", task_id)
        return True

    def _lost(self, ids):
        for task_id in ids:
            if self._held.pop(task_id, "gone") is None:
                self.lease_lost += 1
                self._lost_ids.add(task_id)
                logger.warning("the lease on task %s ran out while this process held it: "
                               "another process may run it as well", task_id)


class KeyHeld(GreenqueueError):
    """A unique enqueue found its key held by another pending task (``holder``, its id)."""

    def __init__(self, holder):
        super().__init__(f"the unique key is held by task {holder}")
        self.holder = holder


class _Batch(list):
    """Envelopes that go to the server in one round trip, led by the first one's greenlet."""

    error = None

    def __init__(self):
        super().__init__()
        self.done = Event()
