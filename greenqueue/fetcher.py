"""The fetcher: feeds the local dispatcher from a shared log (Redis, PostgreSQL).

With a shared log, enqueue writes to the server only, and every process takes its work from
there. One fetcher greenlet per runtime:

- claims as many due tasks as there are idle workers, in one round trip, and pushes them onto
  the local queue. Never more: a claimed task counts as an attempt begun (if this process dies
  now, the lease runs out and the attempt is counted), so it must start soon;
- when all workers are busy, sleeps until one goes idle (the dispatcher calls ``worker_idle``);
- when nothing is due, blocks on the server (``log.wait``: BLPOP, LISTEN) until new work is
  announced, the next delayed task comes due, or ``IDLE_WAIT`` passes (a lease may have run
  out meanwhile, and someone must take it back);
- settles tasks claimed after their lease ran out under another process: the attempt counted
  against ``max_retries`` (``settle_crashed`` buries those past it, as a restart does);
- when the server goes away, logs it and tries again, backing off up to ``MAX_PAUSE``;
  claimed tasks are not lost meanwhile: their leases run out and someone takes them back;
- on stop, hands back the claimed tasks no worker started (appended as they were: the attempt
  does not count).

Hub-only, like the queue and the dispatcher.
"""
import logging

import gevent
from gevent.event import Event

from .errors import GreenqueueError

logger = logging.getLogger(__name__)
IDLE_WAIT = 1.0    # seconds an idle fetcher blocks on the server before looking again
MIN_WAIT = 0.005   # ... and at least this long, so that an overdue change cannot make it spin
MAX_PAUSE = 5.0    # longest back-off while the server is unreachable


class Fetcher:
    def __init__(self, log, queue, dispatcher, settle_crashed):
        self.log = log
        self.queue = queue
        self.dispatcher = dispatcher
        self.settle_crashed = settle_crashed   # env -> True if it was buried
        self.stopping = False
        self.claimed = 0
        self._idle = Event()
        self._greenlet = None
        self._blocked = False   # in a wait that may be cut short (not in the middle of a claim)

    def start(self):
        self._greenlet = gevent.spawn(self._run)

    def worker_idle(self):
        """A worker found nothing to run: there is room to claim more."""
        self._idle.set()

    def stop(self):
        """Claim no more. Call ``release()`` once the workers have stopped.

        A claim in flight is let finish (killed mid-way, its tasks would sit claimed until
        their lease ran out, and count as crashed); a wait on the server is cut short."""
        self.stopping = True
        self._idle.set()
        greenlet = self._greenlet
        if greenlet is None:
            return
        if not self._blocked:
            greenlet.join(timeout=5)
        greenlet.kill(block=True, timeout=5)

    def release(self):
        """Give back the claimed tasks still waiting in the local queue, uncounted."""
        envs = []
        while (env := self.queue.pop()) is not None:
            envs.append(env)
        if not envs:
            return
        try:
            self.log.release(envs)
        except GreenqueueError as exc:
            logger.warning("could not hand back %d claimed task(s): %s; they run again once "
                           "their lease runs out", len(envs), exc)
        else:
            logger.info("handed back %d claimed task(s) that had not started", len(envs))

    def _room(self):
        dispatcher = self.dispatcher
        return dispatcher.concurrency - len(dispatcher.running) - self.queue.ready

    def _run(self):
        pause = 0.1
        while not self.stopping:
            room = self._room()
            if room <= 0:
                self._idle.clear()
                self._idle.wait()
                continue
            try:
                claimed = self.log.claim(room)
                if not claimed:
                    wait = self.log.next_change
                    wait = IDLE_WAIT if wait is None else min(max(wait, MIN_WAIT), IDLE_WAIT)
                    self._blocked = True
                    try:
                        self.log.wait(wait)
                    finally:
                        self._blocked = False
                    continue
            except Exception as exc:  # the server went away, or a bug: keep fetching
                if isinstance(exc, self.log.connection_errors + (GreenqueueError,)):
                    logger.warning("fetching from %s: %s; retrying in %.1f s",
                                   self.log.describe(), exc, pause)
                else:
                    logger.exception("fetching from %s", self.log.describe())
                self.log.reconnect()
                self._blocked = True
                gevent.sleep(pause)
                self._blocked = False
                pause = min(pause * 2, MAX_PAUSE)
                continue
            pause = 0.1
            self.claimed += len(claimed)
            push = self.queue.push
            for env, crashed in claimed:
                if crashed and self.settle_crashed(env):
                    continue
                push(env)
