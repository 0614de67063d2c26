"""The whole cluster on a shared backend (Redis, PostgreSQL): every process of every host.

Duties:
- :class:`Publisher`: a greenlet of every runtime on a shared log (``greenqueue run``, or a
  ``Runtime(backend=URL)`` in an app under gunicorn alike) that stores the process's figures
  (``metrics.snapshot``, light: no USS, no greenlet count) on the server at start and every
  ``PUBLISH_EVERY`` seconds. The log deletes them when it closes; readers skip and delete
  the entries of processes not seen for ``STALE_AFTER`` seconds (killed, host lost);
- :func:`answer`: the process side of the ``cluster`` control command;
- :func:`view`: the cluster as ``greenqueue stats``, the metrics and the dashboard read it:
  the published processes plus the server's own counts (ready, delayed, claimed, dead). It
  reads from a backend URL when one is given, else through this process's running runtime
  when its log is shared, else by asking a local process on a shared log (control socket).
"""
import logging

import gevent
from gevent.event import Event

from .control import query
from .errors import GreenqueueError

logger = logging.getLogger(__name__)
PUBLISH_EVERY = 2.0                 # seconds between two publications of a process's figures
STALE_AFTER = 3 * PUBLISH_EVERY     # a process not seen for this long is gone


class Publisher:
    """Publish ``provider()`` (default: the runtime's light snapshot) to the runtime's log.
    ``greenqueue run`` sets ``provider`` to add how it serves (role, bind, connections)."""

    def __init__(self, runtime):
        from .metrics import snapshot
        self.runtime = runtime
        self.provider = lambda: snapshot(runtime, light=True)
        self._stop = Event()
        self._greenlet = None

    def start(self):
        self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self):
        """Stop publishing; a publication in flight finishes first (its connection stays
        usable), then the log's close removes the entry."""
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=2)
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _loop(self):
        warned = False
        while not self._stop.is_set():
            log = self.runtime.log
            if log is None:
                return
            try:
                log.publish(self.provider())
                warned = False
            except GreenqueueError as exc:  # BackendUnavailable: the next round tries again
                if not warned:
                    logger.warning("publishing this process's figures: %s", exc)
                    warned = True
            except Exception:  # noqa: BLE001 - figures must never stop the process
                logger.exception("publishing this process's figures to %s", log.describe())
            self._stop.wait(PUBLISH_EVERY)


def _shared_log(runtime):
    if runtime is not None and runtime.running and getattr(runtime.log, "shared", False):
        return runtime.log
    return None


def answer(request=None):
    """The ``cluster`` control command: the cluster as this process's shared log sees it."""
    from .runtime import current_runtime
    log = _shared_log(current_runtime())
    if log is None:
        return {"error": "this process does not run on a shared backend"}
    return log.cluster(STALE_AFTER)


def view(data_dir=None, backend=None, pids=(), timeout=3.0):
    """The cluster (see SharedLog.cluster), or None when nothing here is on a shared backend.

    ``backend``: a redis:// or postgresql:// URL to read directly; otherwise this process's
    runtime, if its log is shared; otherwise the first of ``pids`` (local processes on a shared
    log, serving ``data_dir``) that answers the ``cluster`` command. Raises ConfigError or
    BackendUnavailable when the backend named cannot be read."""
    if backend:
        from .log import open_log
        log = open_log(backend)
        try:
            return log.cluster(STALE_AFTER)
        finally:
            log.close()
    from .runtime import current_runtime
    log = _shared_log(current_runtime())
    if log is not None:
        return log.cluster(STALE_AFTER)
    if data_dir:
        from .control import socket_path
        for pid in pids:
            try:
                found = query(socket_path(data_dir, pid), "cluster", timeout=timeout)
            except (OSError, ValueError):
                continue
            if isinstance(found, dict) and "error" not in found:
                return found
    return None
