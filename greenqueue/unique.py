"""Unique tasks: while a task holding a key is pending, delayed, retrying or running, another
enqueue with the same key returns that task's id and logs nothing.

Where a key lives:
- in memory, ``key -> (task id, expires_at)`` and ``task id -> key``, for this process;
- with the disk log, also as one marker file per key in ``<data dir>/unique/``, created with
  ``O_CREAT | O_EXCL`` so that the processes sharing a data directory (``--workers N``) agree
  without talking: the kernel lets exactly one create win. A marker holds the task id, its
  owner (the disk log's chain name, which names the owner's segment files), the expiry time
  (``unique_for``) and the key itself.

Why the owner is a log chain and not a pid: a key must outlive its process exactly as long as
the task does. A dead process's segment files stay in the directory until a live process adopts
them, and the adopter re-signs the markers of the tasks it adopted (``restore``). So a marker
is stale only if it expired, its owner has no segment file left, or its owner adopted it and
the task was not pending (the process died after the task ended but before the unlink).

Release: a task's key goes when the log forgets the task (``remove``: done or purged) or buries
it (dead). Retries and interrupted attempts re-append, which keeps the key. To cost nothing
when no unique task exists, the release hook is a thin wrapper around the log, installed on
first use or at start when markers are found.

Known limit: two processes taking over the *same stale* marker at the same instant can both
win; a stale marker needs an expiry or a crash, so this is a narrow window.

Shared backends (Redis, PostgreSQL) hold the keys on the server, for every process of every
host: the check and the store of the task are one atomic step there (``SharedLog.hold_key``),
and removing or burying the task releases its key in the same step.
"""
import hashlib
import itertools
import logging
import os
import pickle
import time

import gevent

from .envelope import new_id, packed_id
from .errors import TaskError
from .log.shared import KeyHeld

logger = logging.getLogger(__name__)
DIRNAME = "unique"
_graves = itertools.count()


def key_for(spec, args, kwargs):
    """The key of a ``unique=True`` task: its name and a digest of its arguments."""
    data = pickle.dumps((args, sorted(kwargs.items())), 4)
    return f"{spec.name}:{hashlib.sha1(data).hexdigest()}"


class UniqueKeys:
    """The keys of one runtime; ``directory`` None keeps them in this process only."""

    def __init__(self, directory=None, owner=None):
        self.by_key = {}        # key -> (task id, expires_at or None)
        self.by_id = {}         # task id -> key
        self.directory = directory
        self.owner = owner
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)

    def claim(self, key, task_id, expires_at, now):
        """Hold ``key`` for ``task_id``; or return the id of the task that holds it."""
        held = self.by_key.get(key)
        if held is not None:
            if held[1] is None or held[1] > now:
                return held[0]
            self._forget(held[0])  # expired here; its marker is taken over below
        if self.directory is not None:
            holder = self._claim_marker(key, task_id, expires_at, now)
            if holder is not None:
                return holder
        self.by_key[key] = (task_id, expires_at)
        self.by_id[task_id] = key
        return None

    def release(self, task_id):
        key = self._forget(task_id)
        if key is not None and self.directory is not None:
            path = self._path(key)
            marker = _read(path)
            if marker is not None and marker[0] == task_id and marker[1] == self.owner:
                _unlink(path)

    def _forget(self, task_id):
        key = self.by_id.pop(task_id, None)
        if key is not None and self.by_key.get(key, (None,))[0] == task_id:
            del self.by_key[key]
        return key

    # -- marker files -----------------------------------------------------------------------

    def _path(self, key):
        return os.path.join(self.directory, hashlib.sha256(key.encode()).hexdigest()[:40])

    def _claim_marker(self, key, task_id, expires_at, now):
        path = self._path(key)
        body = f"{task_id}\n{self.owner}\n{'' if expires_at is None else expires_at!r}\n{key}"
        deadline = time.monotonic() + 5.0
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                marker = _read(path)
                if marker is None:
                    continue  # released between our create and our read: try again
                if not marker[0]:  # created, not written yet (microseconds) or torn by a crash
                    if _age(path) > 5.0 or time.monotonic() > deadline:
                        self._take_over(path, b"")
                    else:
                        gevent.sleep(0.001)
                    continue
                if not self._stale(marker, now):
                    return marker[0]
                self._take_over(path, marker[4])
                continue
            try:
                os.write(fd, body.encode())
            finally:
                os.close(fd)
            return None

    def _stale(self, marker, now):
        task_id, owner, expires_at = marker[:3]
        if expires_at is not None and expires_at <= now:
            return True
        if owner == self.owner:
            return task_id not in self.by_id  # ours, but its task is gone
        return not owner_alive(os.path.dirname(self.directory), owner)

    def _take_over(self, path, seen):
        """Move a stale marker out of the way; put it back if it was replaced meanwhile."""
        grave = f"{path}.{self.owner}.{next(_graves)}.stale"
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        try:
            with open(grave, "rb") as f:
                moved = f.read()
            if moved != seen:  # a fresh marker replaced the stale one since we read it
                try:
                    os.link(grave, path)
                except FileExistsError:
                    logger.warning("unique key marker %s was claimed twice at once", path)
        finally:
            _unlink(grave)

    # -- start: keys of replayed and adopted tasks -------------------------------------------

    def restore(self, pending_ids, adopted_owners):
        """Take the markers of tasks this process now holds; drop those nobody holds."""
        restored = 0
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".stale"):
                if _age(path) > 60:
                    _unlink(path)
                continue
            marker = _read(path)
            if marker is None:
                continue
            task_id, owner, expires_at, key, _ = marker
            if owner in adopted_owners or owner == self.owner:
                if task_id and task_id in pending_ids:
                    self.by_key[key] = (task_id, expires_at)
                    self.by_id[task_id] = key
                    self._resign(path, marker)
                    restored += 1
                else:
                    _unlink(path)
            elif not owner_alive(os.path.dirname(self.directory), owner):
                _unlink(path)
        return restored

    def _resign(self, path, marker):
        task_id, _, expires_at, key, _ = marker
        body = f"{task_id}\n{self.owner}\n{'' if expires_at is None else expires_at!r}\n{key}"
        temp = f"{path}.{self.owner}.tmp"
        with open(temp, "wb") as f:
            f.write(body.encode())
        os.rename(temp, path)  # atomic: readers see the old owner or the new one


def _read(path):
    """(task id, owner, expires_at, key, raw bytes) of a marker; None if it is gone."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    parts = raw.decode("utf-8", "replace").split("\n", 3)
    if len(parts) < 4:
        return ("", "", None, "", raw)
    task_id, owner, expires, key = parts
    try:
        expires_at = float(expires) if expires else None
    except ValueError:
        expires_at = None
    return (task_id, owner, expires_at, key, raw)


def _age(path):
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def owner_alive(data_dir, owner):
    """Whether segment files of log chain ``owner`` remain (its process, or its tasks, live)."""
    suffix = f"-{owner}.wal"
    try:
        return any(name.endswith(suffix) for name in os.listdir(data_dir))
    except FileNotFoundError:
        return False


class _ReleasingLog:
    """The runtime's log, plus: forgetting or burying a task releases its unique key."""

    def __init__(self, log, keys):
        self._inner = log
        self._keys = keys

    def remove(self, task_id):
        self._inner.remove(task_id)
        if task_id in self._keys.by_id:
            self._keys.release(task_id)

    def bury(self, env, error):
        self._inner.bury(env, error)
        if env.id in self._keys.by_id:
            self._keys.release(env.id)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def keys_of(runtime):
    """The runtime's UniqueKeys, made (and its log wrapped) on first use."""
    keys = runtime.__dict__.get("_unique_keys")
    if keys is None:
        log = runtime.log
        directory = None
        if hasattr(log, "chain") and hasattr(log, "path"):  # the disk log
            directory = os.path.join(log.path, DIRNAME)
        keys = runtime._unique_keys = UniqueKeys(directory, getattr(log, "chain", None))
        runtime.log = runtime.dispatcher.log = _ReleasingLog(log, keys)
    return keys


def restore(runtime):
    """At start, after replay: rebuild the keys of the tasks this process now holds."""
    log = runtime.log
    if not (hasattr(log, "chain") and hasattr(log, "path")):
        return
    directory = os.path.join(log.path, DIRNAME)
    try:
        if not os.listdir(directory):
            return
    except FileNotFoundError:
        return
    keys = keys_of(runtime)
    pending = {packed_id(p) for p in log.pending_packed()}
    adopted = {os.path.basename(path)[:-4].split("-", 1)[-1] for path, _ in log.segments}
    adopted.discard(log.chain)
    restored = keys.restore(pending, adopted)
    if restored:
        logger.info("greenqueue: %d unique key(s) held by replayed tasks", restored)


def push(runtime, spec, target, args, kwargs, delay, delay_until, priority, durable, key):
    """Enqueue unless a task holds ``key``; return the new id or the holder's."""
    if getattr(runtime, "eager", False):
        return runtime.push(spec, target, args, kwargs, delay, delay_until, priority, durable)
    if not isinstance(key, str) or not key:
        raise TaskError(f"unique_key must be a non-empty str, not {key!r}")
    task_id = new_id()
    unique_for = getattr(spec, "unique_for", None)
    if getattr(runtime.log, "shared", False):
        return _push_shared(runtime, spec, target, args, kwargs, delay, delay_until, priority,
                            durable, key, task_id, unique_for)
    keys = keys_of(runtime)
    now = runtime.queue.now()
    expires_at = None if unique_for is None else now + unique_for
    holder = keys.claim(key, task_id, expires_at, now)
    if holder is not None:
        return holder
    try:
        return runtime.push(spec, target, args, kwargs, delay, delay_until, priority, durable,
                            task_id=task_id)
    except BaseException:
        keys.release(task_id)
        raise


def _push_shared(runtime, spec, target, args, kwargs, delay, delay_until, priority, durable,
                 key, task_id, unique_for):
    """On a shared log the server holds the key, for every process of every host."""
    log = runtime.log
    log.hold_key(task_id, key, unique_for)
    try:
        return runtime.push(spec, target, args, kwargs, delay, delay_until, priority, durable,
                            task_id=task_id)
    except KeyHeld as held:
        return held.holder
    finally:
        log.forget_key(task_id)
