"""Ready tasks by priority (then FIFO), delayed tasks by due time, with backpressure.

Duties:
- ``push`` files an envelope as ready or delayed and wakes one idle worker, never switching
  greenlets itself (the wake-up runs from the hub), so ``enqueue`` returns at once;
- ``pop`` hands out the best ready envelope, first promoting delayed ones that came due;
  ready envelopes sit in one FIFO deque per priority level (O(1) both ways: apps use few
  levels), delayed ones in a heap keyed by due time;
- ``wait`` parks an idle worker; ``wait_for_room`` parks an enqueuing greenlet while the ready
  heap is above the high-water mark, raising PushTimeout after ``push_timeout`` seconds.

Hub-only: every method must run in a greenlet of the hub that owns the queue (not thread-safe).
"""
import struct
import time
from collections import deque
from heapq import heapify, heappop, heappush
from itertools import count

from gevent import get_hub
from gevent.event import Event
from gevent.hub import Waiter
from gevent.timeout import Timeout

from .envelope import packed_priority, unpack
from .errors import PushTimeout

_unpack_head = struct.Struct("<ddi").unpack_from   # publish_at, enqueued_at, priority


class TaskQueue:
    def __init__(self, high_water_mark=None, low_water_mark=None, push_timeout=2.0):
        self.levels = {}           # priority -> deque of ready envelopes
        self.top = None            # highest priority with ready envelopes
        self.ready = 0             # how many envelopes are ready
        self.delayed = []          # heap of (publish_at, seq, packed envelope): see Envelope.pack
        self._seq = count()        # FIFO among equal due times (ids do not sort by age)
        self._idle = deque()       # Waiters of parked workers
        self.high_water_mark = high_water_mark   # None: no backpressure
        self.low_water_mark = low_water_mark if high_water_mark is not None else -1
        self.push_timeout = push_timeout
        self._room = Event()
        self._room.set()
        self.delayed_changed = Event()  # the scheduler's alarm: a new earliest due time
        # The one clock that decides when a delayed task is due (epoch seconds). Tests swap
        # in a fake one (greenqueue.testing); read only for delayed tasks, never per ready one.
        self.now = time.time

    def push(self, env):
        if env.publish_at and env.publish_at > self.now():
            delayed = self.delayed
            if not delayed or env.publish_at < delayed[0][0]:
                self.delayed_changed.set()
            heappush(delayed, (env.publish_at, next(self._seq), env.pack()))
            return
        self._ready(env)
        self._check_room()

    def _check_room(self):
        """Close the room for enqueuers once the ready tasks reach the high-water mark."""
        if self.high_water_mark is not None and self.ready >= self.high_water_mark:
            self._room.clear()

    def _ready(self, env):
        """File a ready envelope, or a packed one (replay, due delayed): unpacked on pop."""
        priority = env.priority if env.__class__ is not bytes else packed_priority(env)
        level = self.levels.get(priority)
        if level is None:
            level = self.levels[priority] = deque()
            if self.top is None or priority > self.top:
                self.top = priority
        level.append(env)
        self.ready += 1
        if self._idle:
            self._wake()

    def extend(self, packed_envelopes):
        """Queue many packed envelopes at once (replay): one heapify, nothing unpacked."""
        now = self.now()
        later = []
        levels = self.levels
        for packed in packed_envelopes:
            publish_at, _, priority = _unpack_head(packed)
            if publish_at and publish_at > now:
                later.append((publish_at, next(self._seq), packed))
                continue
            level = levels.get(priority)
            if level is None:
                level = levels[priority] = deque()
            level.append(packed)
            self.ready += 1
        if self.levels:
            self.top = max(self.levels)
        if self._idle:
            self.wake_all()
        self._check_room()
        if later:
            self.delayed.extend(later)
            heapify(self.delayed)
            self.delayed_changed.set()

    def pop(self):
        """The next ready envelope, or None. Promotes due delayed envelopes first."""
        if self.delayed and self.delayed[0][0] <= self.now():
            self.promote_due()
        if not self.ready:
            return None
        level = self.levels[self.top]
        env = level.popleft()
        if env.__class__ is bytes:
            env = unpack(env)
        if not level:
            del self.levels[self.top]
            self.top = max(self.levels) if self.levels else None
        self.ready -= 1
        if self.ready <= self.low_water_mark and not self._room.is_set():
            self._room.set()
        return env

    def promote_due(self):
        """Move every delayed envelope whose time has come to the ready heap."""
        now = self.now()
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            self._ready(heappop(delayed)[2])
        self._check_room()

    def next_due(self):
        return self.delayed[0][0] if self.delayed else None

    def _wake(self):
        get_hub().loop.run_callback(self._idle.popleft().switch, None)

    def wait(self, timeout=None):
        """Park the calling worker until a push wakes it (or ``timeout`` passes)."""
        waiter = Waiter()
        self._idle.append(waiter)
        timer = Timeout._start_new_or_dummy(timeout)
        try:
            waiter.get()
        except Timeout as exc:
            if exc is not timer:
                raise
        finally:
            timer.cancel()
            try:
                self._idle.remove(waiter)
            except ValueError:
                pass

    def wake_all(self):
        while self._idle:
            self._wake()

    def wait_for_room(self):
        """Backpressure: block this greenlet while the ready heap is over the high-water mark."""
        if self._room.is_set():
            return
        if not self._room.wait(self.push_timeout):
            raise PushTimeout(
                f"{self.ready} tasks ready, above the low-water mark of {self.low_water_mark} "
                f"for {self.push_timeout} s")
