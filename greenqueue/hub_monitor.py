"""Name the task that blocked the gevent hub: gevent's monitor thread, told which task ran.

A task that never yields (a CPU-bound loop, a C library that ignores monkey-patching) stalls
every request and task of its process. gevent's own monitor (``gevent.config.monitor_thread``,
``max_blocking_time``) notices from a native thread that no greenlet switch happened for a
whole period and emits ``gevent.events.EventLoopBlocked`` there, while the culprit still runs.
This module subscribes to that event and finds the culprit task by walking the hub thread's
current frames up to the dispatcher's ``_run`` frame and reading its ``env`` local. gevent
builds a report of every greenlet before it emits the event, which with a hundred workers can
take longer than the culprit keeps running; so a sampler, added to the same monitor thread at
half the threshold, also notes which task is on the CPU and its stack, and the event is matched
with that sample (or, failing both, with the task its worker greenlet started last). The task
hot path pays one list store per task for it.

Duties:
- :class:`HubMonitor` ``start(threshold)`` / ``stop()``: one per process (the hub is one per
  process; gevent's monitor thread is per hub), kept in a module global for ``figures()``;
- per task name: a count, the id of the last culprit, and one warning in the log with the
  stack, the first time that name blocks (repeats are counted, not logged);
- ``figures()`` adds ``hub_blocked`` (total), ``hub_blocked_by`` ({name: count}),
  ``hub_blocked_last`` and ``max_blocking_ms`` to ``greenqueue stats`` and the metrics.

Threads: ``_on_event`` runs in the monitor thread while the hub thread is paused mid-task (it
holds the GIL). It only reads frames, formats the stack and updates plain dicts; the warning
is logged on the hub afterwards (``run_callback_threadsafe``), since logging takes locks that
monkey-patching made cooperative.
"""
import logging
import sys
import time
import traceback

logger = logging.getLogger("greenqueue.hub")
_active = None      # the running HubMonitor of this process, if any
NOT_A_TASK = "(not a task)"


class HubMonitor:
    def __init__(self, threshold=0.1):
        self.threshold = float(threshold)
        self.counts = {}            # task name -> times it blocked the hub
        self.last = None            # {"task", "id", "at"} of the latest report
        self._logged = set()        # names already warned about
        self._hub = None

    def start(self):
        """Turn gevent's monitor thread on at ``threshold`` seconds (call on the hub thread)."""
        global _active
        import gevent
        from gevent import events
        config = gevent.config
        config.max_blocking_time = self.threshold
        if not config.monitor_thread:  # ours: report through the log, not gevent's stderr dump
            config.monitor_thread = True
            config.print_blocking_reports = False
        self._hub = gevent.get_hub()
        events.subscribers.append(self._on_event)
        self._seen = None           # (envelope, StackSummary) of the last sample inside a task
        thread = self._hub.start_periodic_monitoring_thread()
        thread.add_monitoring_function(self._sample, self.threshold / 2)
        _active = self
        return self

    def stop(self):
        global _active
        from gevent import events
        if self._on_event in events.subscribers:
            events.subscribers.remove(self._on_event)
        if _active is self:
            _active = None

    # -- in the monitor thread ------------------------------------------------------------------

    def _sample(self, hub):
        try:
            env, summary = _culprit(sys._current_frames().get(hub.thread_ident))
        except Exception:  # noqa: BLE001 - an exception here would end gevent's monitor thread
            self._failed()
            return
        if env is not None:
            self._seen = (env, summary)

    def _on_event(self, event):
        from gevent.events import EventLoopBlocked
        if not isinstance(event, EventLoopBlocked) or event.hub is not self._hub:
            return
        try:
            self._report(event)
        except Exception:  # noqa: BLE001 - as in _sample
            self._failed()

    def _failed(self):
        text = traceback.format_exc()
        self._hub.loop.run_callback_threadsafe(logger.error, "hub monitor: %s", text)

    def _report(self, event):
        env, summary = _culprit(sys._current_frames().get(self._hub.thread_ident))
        if env is None:  # the task returned while gevent built its report
            env = _last_started(event.greenlet)
            seen = self._seen
            if env is not None and seen is not None and seen[0] is env:
                summary = seen[1]
            elif env is not None:
                summary = None
        stack = "".join(summary.format()).rstrip() if summary is not None else \
            "  (not captured: the task returned before the monitor looked)"
        name = env.name if env is not None else NOT_A_TASK
        if env is not None and self.last is not None and \
                (self.last["id"], self.last["attempt"]) == (env.id, env.attempt):
            return  # the same attempt, still blocking at the next period: counted once
        self.counts[name] = self.counts.get(name, 0) + 1
        self.last = {"task": name, "id": env.id if env is not None else None,
                     "attempt": env.attempt if env is not None else None, "at": time.time(),
                     "greenlet": repr(event.greenlet)}
        if name not in self._logged:
            self._logged.add(name)
            self._hub.loop.run_callback_threadsafe(self._warn, dict(self.last), stack)

    # -- on the hub ---------------------------------------------------------------------------

    def _warn(self, last, stack):
        if last["id"] is not None:
            logger.warning("task %s (%s) blocked the gevent hub for more than %.0f ms: every "
                           "request and task of this process waited. Make it yield "
                           "(gevent.sleep(0) in loops, a gevent-aware driver) or move the work "
                           "to a thread pool. Reported once per task name; "
                           "`greenqueue stats` counts them all. Stack:\n%s", last["task"],
                           last["id"], self.threshold * 1000, stack)
        else:
            logger.warning("%s blocked the gevent hub for more than %.0f ms (not a task). "
                           "Stack:\n%s", last["greenlet"], self.threshold * 1000, stack)

    def figures(self):
        return {"hub_blocked": sum(self.counts.values()), "hub_blocked_by": dict(self.counts),
                "hub_blocked_last": self.last, "max_blocking_ms": self.threshold * 1000}


def _culprit(frame):
    """(envelope or None, StackSummary) for the hub thread's frame ``frame``: the stack is cut
    at the dispatcher's ``_run`` so that it shows the task's own code. Source lines are read
    when the summary is formatted, not here (this runs every half threshold)."""
    from .dispatcher import Dispatcher
    run_code = Dispatcher._run.__code__
    frames = []
    env = None
    while frame is not None:
        if frame.f_code is run_code:
            env = frame.f_locals.get("env")
            break
        frames.append(frame)
        frame = frame.f_back
    if env is None:
        frames = frames[:30]   # not a task: the innermost frames are the useful ones
    summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in reversed(frames)),
                                             lookup_lines=False)
    return env, summary


def _last_started(greenlet):
    """The task a worker greenlet started last, if ``greenlet`` is a worker of the runtime."""
    from .runtime import current_runtime
    runtime = current_runtime()
    dispatcher = getattr(runtime, "dispatcher", None)
    slot = dispatcher.started.get(greenlet) if dispatcher is not None else None
    return slot[0] if slot else None


def figures():
    """This process's hub-blocking figures (zeros when no monitor runs)."""
    if _active is None:
        return {"hub_blocked": 0, "hub_blocked_by": {}, "hub_blocked_last": None,
                "max_blocking_ms": None}
    return _active.figures()


def start(threshold):
    """Start the process's monitor at ``threshold`` seconds (None or 0: do not)."""
    if not threshold:
        return None
    if _active is not None:
        return _active
    return HubMonitor(threshold).start()
