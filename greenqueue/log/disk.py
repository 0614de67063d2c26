"""The default log: CRC-checked segment files in a data directory, fsync'd in batches.

Duties:
- every ``append``/``begin``/``bury`` is one ``os.write`` before it returns, so ``kill -9``
  loses nothing acknowledged; ``remove`` records queue up and ride on the next write, or go
  out with the flusher at the latest every ``fsync_interval``;
- one flusher greenlet fsyncs every ``fsync_interval`` on the hub's threadpool (the hub keeps
  serving) and wakes ``sync()`` callers whose records that fsync covered (group commit);
- rotation: past ``segment_size`` with no immediate task outstanding, copy the pending tasks
  (delayed ones, really) and the dead set into a fresh segment in chunks, yielding between
  chunks, fsync, then delete the old segments; the limit grows when the copy itself is big,
  so a log full of far-future tasks does not rotate in a loop;
- ownership: each process holds an exclusive ``flock`` on its segments. At start it adopts the
  segments nobody holds (their owner died or stopped), replays them, and keeps them as the
  oldest part of its own chain until the next rotation folds them in.

Segments replay in generation order (a new segment's generation is above every segment its
process has seen), so facts written later always win. Hub-only, except the fsync itself.
"""
import errno
import fcntl
import gc
import logging
import os
import secrets
import time

from collections import deque

import gevent
from gevent.event import Event

from ..errors import LogWriteError
from . import DeadTask, Log
from ..envelope import unpack
from .format import BEGIN, NOW as _NOW, REMOVE, Framer, State, scan, segment_header

logger = logging.getLogger(__name__)
SUFFIX = ".wal"
COPY_CHUNK = 250           # envelopes copied per hub slice during rotation (~0.3 ms)
COPY_PAUSE = 0.0002        # seconds between slices: the hub polls and runs timers meanwhile


def _off_hub(fn, *args):
    """Run a blocking call (fsync) on the hub's threadpool: only this greenlet waits."""
    return gevent.get_hub().threadpool.apply(fn, args)


def segment_paths(path):
    """The segment files of a data directory, oldest generation first."""
    try:
        names = [n for n in os.listdir(path) if n.endswith(SUFFIX) and not n.startswith(".")]
    except FileNotFoundError:
        return []
    return [os.path.join(path, n) for n in sorted(names)]


def generation(segment_path):
    try:
        return int(os.path.basename(segment_path).split("-", 1)[0])
    except ValueError:
        return 0


def replay_into(state, paths, secret, where="replay"):
    """Feed the intact records of ``paths`` into ``state``; warn about what was skipped."""
    for segment in paths:
        with open(segment, "rb") as f:
            data = f.read()
        collecting = gc.isenabled()
        gc.disable()  # a million new long-lived objects would trigger a dozen full collections
        try:
            result = scan(data, secret, state.apply)
        finally:
            if collecting:
                gc.enable()
        for damage in result.damage:
            what = ("zero-filled tail" if damage.zeros else "torn tail") if damage.tail \
                else "corrupt record(s)"
            logger.warning("%s: %s of %d bytes skipped in %s at offset %d", where, what,
                           damage.length, segment, damage.offset)
        if result.refused:
            logger.warning("%s: %d record(s) in %s failed their signature and were not read",
                           where, result.refused, segment)
        yield segment, result


class DiskLog(Log):
    def __init__(self, path="greenqueue-data", fsync_interval=0.5,
                 segment_size=2 * 1024 * 1024, secret=None, **_ignored):
        self.path = os.path.abspath(os.fspath(path))
        self.fsync_interval = fsync_interval
        self.segment_size = self.limit = segment_size
        self.secret = secret
        self.framer = Framer(secret)
        self.chain = f"{os.getpid():x}{secrets.token_hex(3)}"[:16]
        self.state = State()
        self.pending_ = self.state.pending      # id -> packed envelope (running, delayed too)
        self.dead_ = self.state.dead            # id -> (Envelope, error)
        self.begun = self.state.begun
        self.immediate = 0                      # pending entries that were due on append
        self.tracked = deque()                  # ids a rotation may have to copy (see _rotate)
        self.segments = []                      # [(path, fd)] oldest first; last is active
        self.fd = None
        self.size = 0                           # bytes in the active segment
        self.removes = []                       # ids whose remove record is not written yet
        self.dirty = False
        self.round = Event()                    # set when the fsync in progress is done
        self.kick = Event()
        self.closed = False
        self.skipped = {"damaged_bytes": 0, "refused": 0}
        self._prepare_dir()
        adopted = self._adopt()
        self._crashed = self.state.crashed()
        self.immediate = self.state.immediate
        self.tracked.extend(self.pending_)
        self._new_segment(max([generation(p) for p in segment_paths(self.path)] or [0]) + 1)
        self.segments[:0] = adopted
        if self._crashed:  # make the counted attempts durable, or the next crash forgets them
            self._write(b"".join(self.framer.add_packed(self.pending_[i]) for i in self._crashed))
        if adopted and not self.pending_ and not self.dead_:
            self._drop(adopted)
        self._drop(self._empty_adopted)  # header-only segments hold no fact
        self._flusher = gevent.spawn(self._flush_loop)

    # -- opening ------------------------------------------------------------------------------

    def _prepare_dir(self):
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LogWriteError(f"cannot create the data directory {self.path}: {exc}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise LogWriteError(f"the data directory {self.path} is not writable")

    def _adopt(self):
        """Lock and replay every segment whose owner is gone; return them as [(path, fd)]."""
        self._remove_stale_temps()
        adopted = []
        for segment in segment_paths(self.path):
            try:
                fd = os.open(segment, os.O_RDWR)
            except FileNotFoundError:
                continue  # its owner rotated it away just now
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process owns it
                continue
            if not os.path.exists(segment):  # deleted between listdir and lock
                os.close(fd)
                continue
            adopted.append((segment, fd))
        empty = []
        for segment, result in replay_into(self.state, [p for p, _ in adopted], self.secret):
            self.skipped["damaged_bytes"] += sum(d.length for d in result.damage)
            self.skipped["refused"] += result.refused
            if not result.records and not result.damage and not result.refused:
                empty.append(segment)
        self._empty_adopted = [s for s in adopted if s[0] in empty]
        return [s for s in adopted if s[0] not in empty]

    def _remove_stale_temps(self):
        """Delete half-made segments (a crash between create and rename) nobody holds."""
        for name in os.listdir(self.path):
            if name.startswith(".") and name.endswith(".tmp"):
                temp = os.path.join(self.path, name)
                try:
                    fd = os.open(temp, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(temp)
                except (BlockingIOError, FileNotFoundError):
                    pass
                finally:
                    os.close(fd)

    def _new_segment(self, gen):
        """Create, lock and make durable a fresh segment; it becomes the active one."""
        final = os.path.join(self.path, f"{gen:08d}-{self.chain}{SUFFIX}")
        temp = os.path.join(self.path, f".{gen:08d}-{self.chain}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = segment_header(self.chain, gen, time.time(), self.secret is not None)
            os.write(fd, header)
            _off_hub(os.fsync, fd)  # the header is durable before the first record
            os.rename(temp, final)
            self._sync_dir()
        except OSError as exc:
            raise LogWriteError(f"cannot create a log segment in {self.path}: {exc}") from exc
        self.segments.append((final, fd))
        self.fd, self.size, self.gen = fd, len(header), gen

    def _sync_dir(self):
        """Make creations, renames and deletions in the directory durable."""
        dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _off_hub(os.fsync, dir_fd)
        finally:
            os.close(dir_fd)

    # -- the contract ---------------------------------------------------------------------

    def append(self, env):
        packed = env.pack()
        data = self.framer.add_packed(packed)
        if self.removes:
            data = self._take_removes() + data
        self._write(data)
        task_id = env.id
        old = self.pending_.get(task_id)
        was_tracked = False
        if old is None:
            if task_id in self.dead_:
                del self.dead_[task_id]
        elif old.startswith(_NOW):
            self.immediate -= 1
        else:
            was_tracked = True
        if not env.publish_at:
            self.immediate += 1
        elif not was_tracked:
            self.tracked.append(task_id)
        self.pending_[task_id] = packed
        if self.begun:
            self.begun.discard(task_id)

    def begin(self, envs):
        data = self.framer.ids(BEGIN, [env.id for env in envs])
        if self.removes:
            data = self._take_removes() + data
        self._write(data)
        self.begun.update(env.id for env in envs)

    def remove(self, task_id):
        packed = self.pending_.pop(task_id, None)
        if packed is None:
            if self.dead_.pop(task_id, None) is None:
                return
        elif packed.startswith(_NOW):
            self.immediate -= 1
        self.begun.discard(task_id)
        self.removes.append(task_id)
        if len(self.removes) >= 512:
            self._write(self._take_removes())

    def bury(self, env, error):
        data = self.framer.bury(env, error)
        if self.removes:
            data = self._take_removes() + data
        self._write(data)
        old = self.pending_.pop(env.id, None)
        if old is not None and old.startswith(_NOW):
            self.immediate -= 1
        self.begun.discard(env.id)
        self.dead_[env.id] = (env, error)

    def pending(self):
        return [unpack(packed) for packed in self.pending_.values()]

    def pending_packed(self):
        """``pending()`` as packed envelopes (Envelope.pack): replay queues them as they are."""
        return list(self.pending_.values())

    def crashed(self):
        """Ids whose last attempt was cut short by a crash (their attempt is counted)."""
        return self._crashed

    def dead(self):
        return [DeadTask(env, error) for env, error in self.dead_.values()]

    def sync(self):
        """Block this greenlet until an fsync covers everything written so far."""
        done = self.round
        self.kick.set()
        done.wait()

    def describe(self):
        return f"disk log in {self.path}"

    def info(self):
        """Figures for ``greenqueue stats``."""
        sizes = []
        for segment, _ in self.segments:
            try:
                sizes.append(os.path.getsize(segment))
            except OSError:
                pass
        return {"segments": len(sizes), "log_bytes": sum(sizes), "path": self.path,
                "limit": self.limit, "skipped": dict(self.skipped)}

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.kick.set()
        if self._flusher is not gevent.getcurrent():
            self._flusher.join(timeout=30)   # let a rotation in progress finish
            self._flusher.kill(block=True, timeout=5)
        try:
            if self.removes:
                self._write(self._take_removes())
            os.fsync(self.fd)
        except (OSError, LogWriteError) as exc:
            logger.error("closing the log: %s", exc)
        self.round.set()
        if not self.pending_ and not self.dead_:
            self._drop(self.segments)  # nothing left to keep: leave the directory clean
        else:
            for _, fd in self.segments:
                os.close(fd)
        self.segments = []

    # -- writing ----------------------------------------------------------------------------

    def _take_removes(self):
        data = self.framer.ids(REMOVE, self.removes)
        self.removes = []
        return data

    def _write(self, data):
        try:
            written = os.write(self.fd, data)
        except OSError as exc:
            self._undo_partial()
            raise LogWriteError(f"cannot write to the log in {self.path}: "
                                f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
                                ) from exc
        if written != len(data):
            self._undo_partial()
            raise LogWriteError(f"short write to the log in {self.path} "
                                f"({written} of {len(data)} bytes): disk full?")
        self.size += written
        self.dirty = True

    def _undo_partial(self):
        """Cut a half-written record off so that the next one follows the last whole one."""
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            pass  # replay treats a torn record as damage and reads on

    # -- the flusher: fsync rounds and rotation ------------------------------------------------

    def _flush_loop(self):
        while not self.closed:
            self.kick.wait(self.fsync_interval)
            self.kick.clear()
            try:
                self._fsync_round()
                if self.size > self.limit and not self.immediate:
                    self._rotate()
            except Exception:  # keep flushing: the next round may succeed (disk freed)
                logger.exception("log flusher in %s", self.path)

    def _fsync_round(self):
        if self.removes:
            self._write(self._take_removes())
        done, self.round = self.round, Event()
        if self.dirty:
            self.dirty = False
            _off_hub(os.fsync, self.fd)
        done.set()

    def _rotate(self):
        started = time.perf_counter()
        old = list(self.segments)
        self._new_segment(self.gen + 1)
        copied = 0
        # Which ids to copy: rotation runs only when no immediate task is pending, so every
        # pending task was appended with a due time and sits in `tracked` (with ids of tasks
        # gone since, skipped below). Taking it in chunks avoids a snapshot of the whole
        # index, which costs ~20 ms for a million ids. Tasks appended from now on are written
        # to the new segment and tracked afresh.
        todo, self.tracked = self.tracked, deque()
        pending, add, begun = self.pending_, self.framer.add_packed, self.begun
        while todo:
            chunk = [todo.popleft() for _ in range(min(COPY_CHUNK, len(todo)))]
            chunk = [task_id for task_id in chunk if task_id in pending]
            self.tracked.extend(chunk)
            frames = [add(pending[task_id]) for task_id in chunk]
            running = [task_id for task_id in chunk if task_id in begun]
            if running:
                frames.append(self.framer.ids(BEGIN, running))
            data = b"".join(frames)
            if data:
                self._write(data)
                copied += len(data)
            # a timer, not sleep(0): sleep(0) only queues behind other callbacks, and a loop of
            # those starves timers and I/O; a timer resumes us after the hub has polled
            gevent.sleep(COPY_PAUSE)
        for env, error in list(self.dead_.values()):
            data = self.framer.add(env) + self.framer.bury(env, error)
            self._write(data)
            copied += len(data)
        self._fsync_round()
        self._drop(old)
        self.limit = max(self.segment_size, 2 * copied)  # the loop guard: room to grow first
        logger.info("rotated the log in %s: %d task(s), %d bytes copied in %.3f s", self.path,
                    len(self.pending_), copied, time.perf_counter() - started)

    def _drop(self, segments):
        for segment, fd in segments:
            try:
                _off_hub(os.unlink, segment)  # freeing a big file's blocks takes a while
            except FileNotFoundError:
                pass
            os.close(fd)
        self.segments = [s for s in self.segments if s not in segments]
        self._sync_dir()
