"""The dead set as operators see it: described, retried and purged, live or offline.

Duties:
- ``summary(dead)`` / ``detail(dead)`` turn a :class:`~greenqueue.log.DeadTask` into the
  JSON-ready dicts that ``greenqueue dead list`` / ``show`` print (and that travel over the
  control socket);
- ``answer(request)`` is the process side of the ``dead_*`` control commands: it acts on the
  process's running runtime, on the hub, in the control socket's greenlet;
- :class:`SharedDeadSet` works on a shared backend's server directly (the cluster's dead set);
- :class:`OfflineDeadSet` works on a data directory that no process serves. Reading scans the
  segments without a lock (as ``greenqueue log inspect`` does); changing opens a
  :class:`~greenqueue.log.disk.DiskLog` on the directory, which takes the same ``flock`` on
  every segment a starting process would take, so a process that starts meanwhile cannot
  adopt the same segments, and a write lands in a segment that the next start replays.

Why both paths: a live process holds its segments' locks and keeps the dead set in memory; a
change made behind its back would be lost or applied twice. With no process, the log is the
only truth and the CLI may own it for a moment.
"""
import os
import pickle
import reprlib

from .log.disk import replay_into, segment_paths
from .log.format import State

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 20


def summary(dead):
    """One line's worth: what ``dead list`` shows."""
    error = dead.error or {}
    return {
        "id": dead.id,
        "task": dead.name,
        "attempts": dead.attempts,
        "enqueued_at": dead.envelope.enqueued_at or None,
        "first_failed_at": error.get("first_failed_at") or (
            error.get("failed_at") if dead.attempts <= 1 else None),
        "failed_at": error.get("failed_at"),
        "error": error.get("type"),
        "message": error.get("message", ""),
    }


def detail(dead):
    """Everything ``dead show`` prints: the summary plus arguments and the traceback."""
    out = summary(dead)
    out["traceback"] = (dead.error or {}).get("traceback", "")
    out["priority"] = dead.envelope.priority
    try:
        _target, args, kwargs, context = pickle.loads(dead.envelope.payload)
        out["args"] = [_repr.repr(a) for a in args]
        out["kwargs"] = {str(k): _repr.repr(v) for k, v in kwargs.items()}
        out["context"] = context if isinstance(context, dict) else None
    except Exception as exc:  # noqa: BLE001 - the task's module or classes may be missing here
        out["args"] = None
        out["kwargs"] = None
        out["decode_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _oldest_first(dead):
    return sorted(dead, key=lambda d: (d.error or {}).get("failed_at") or 0)


def _matching(dead, task):
    return [d for d in dead if task is None or d.name == task]


# -- the process side of the control socket -----------------------------------------------------

def answer(request):
    """Answer one ``dead_*`` control request with this process's running runtime."""
    from .runtime import current_runtime
    runtime = current_runtime()
    if runtime is None or not runtime.running:
        return {"error": "no greenqueue runtime is running in this process"}
    cmd = request.get("cmd")
    if cmd == "dead_list":
        return {"dead": [summary(d) for d in _matching(runtime.dead(), request.get("task"))]}
    if cmd == "dead_show":
        found = [d for d in runtime.log.dead() if d.id == request.get("id")]
        return {"task": detail(found[0]) if found else None}
    ids = [str(i) for i in request.get("ids") or ()]
    if cmd == "dead_retry":
        return {"retried": runtime.retry_dead_many(ids)}
    if cmd == "dead_purge":
        dead_ids = {d.id for d in runtime.log.dead()}
        present = [i for i in ids if i in dead_ids]
        runtime.purge_dead(present)
        return {"purged": present}
    return {"error": f"unknown command {cmd!r}"}


# -- no process: straight on the log --------------------------------------------------------------

class OfflineDeadSet:
    """The dead set of a data directory that no live process serves (disk log only).

    ``list``/``show`` read the segments without locking; ``retry``/``purge`` must run inside
    ``with self.owned():``, which opens the directory as a process would (flock on every
    segment nobody holds) and closes it again, fsync'd."""

    def __init__(self, data_dir, secret=None):
        self.data_dir = os.path.abspath(data_dir)
        self.secret = secret
        self._log = None

    def _read(self):
        from .log import DeadTask
        if self._log is not None:
            return self._log.dead()
        state = State()
        for _segment, _result in replay_into(state, segment_paths(self.data_dir), self.secret,
                                             where="dead set"):
            pass
        return [DeadTask(env, error) for env, error in state.dead.values()]

    def list(self, task=None):
        return [summary(d) for d in _matching(_oldest_first(self._read()), task)]

    def show(self, task_id):
        found = [d for d in self._read() if d.id == task_id]
        return detail(found[0]) if found else None

    def owned(self):
        return _Owned(self)

    def retry(self, ids):
        """Make these dead tasks pending again with a fresh retry budget; the ids that were."""
        log = self._owned_log()
        dead = {d.id: d for d in log.dead()}
        done = []
        for task_id in ids:
            found = dead.pop(task_id, None)
            if found is not None:
                log.append(found.envelope.replace(attempt=0, publish_at=0.0))
                done.append(task_id)
        return done

    def purge(self, ids):
        """Forget these dead tasks; the ids that were dead."""
        log = self._owned_log()
        dead_ids = {d.id for d in log.dead()}
        done = [i for i in ids if i in dead_ids]
        for task_id in done:
            log.remove(task_id)
        return done

    def _owned_log(self):
        if self._log is None:
            raise RuntimeError("changes to an offline dead set need `with dead_set.owned():`")
        return self._log

    def open(self):
        from .log.disk import DiskLog
        return DiskLog(self.data_dir, secret=self.secret)


class SharedDeadSet(OfflineDeadSet):
    """The cluster's dead set on a shared backend (Redis, PostgreSQL), read and changed on
    the server: there the server is the one truth for every process, so none need be asked
    and none need be running. A retried task runs as soon as any process claims it."""

    shared = True

    def __init__(self, url):
        super().__init__(url)
        self.data_dir = self.url = url

    def _read(self):
        if self._log is not None:
            return self._log.dead()
        log = self.open()
        try:
            return log.dead()
        finally:
            log.close()

    def open(self):
        from .log import open_log
        return open_log(self.url)


class _Owned:
    def __init__(self, dead_set):
        self.dead_set = dead_set

    def __enter__(self):
        self.dead_set._log = self.dead_set.open()
        return self.dead_set

    def __exit__(self, *exc):
        log, self.dead_set._log = self.dead_set._log, None
        log.close()  # writes the batched removes and fsyncs before the locks go
