"""The disk log on real files: permissions, replay, crash accounting, rotation, signing, errors."""
import logging
import os
import stat
import zlib

import gevent
import pytest

import greenqueue
from greenqueue.log import disk
from greenqueue.log.disk import DiskLog, segment_paths
from greenqueue.log.format import FRAME_SIZE, HEADER_SIZE, _frame, scan
from tests import tasks
from tests.log import disk_tasks
from tests.log.helpers import abandon, envelope, reopen, run_child


def test_directory_0700_and_segments_0600(tmp_path):
    log = DiskLog(tmp_path / "data")
    log.append(envelope())
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
        for path in segment_paths(tmp_path / "data"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        log.close()


def test_replay_keeps_pending_delayed_dead_and_forgets_finished(tmp_path):
    path = tmp_path / "data"
    log = DiskLog(path)
    now_task, later, done, dead = envelope(), envelope(publish_at=4e9), envelope(), envelope()
    for env in (now_task, later, done, dead):
        log.append(env)
    log.remove(done.id)
    log.bury(dead.replace(attempt=6), {"type": "KeyError", "message": "x", "traceback": "tb"})
    abandon(log)  # kill -9: nothing flushed beyond what os.write took
    pending, dead_set, crashed = reopen(path)
    # the remove of `done` sat in the batch buffer and may be lost: at-least-once
    assert {now_task.id, later.id} <= set(pending) <= {now_task.id, later.id, done.id}
    assert pending[later.id].publish_at == 4e9
    assert dead_set[dead.id].attempts == 6 and dead_set[dead.id].error["type"] == "KeyError"
    assert crashed == set()


def test_clean_close_flushes_removes(tmp_path):
    path = tmp_path / "data"
    log = DiskLog(path)
    a, b = envelope(), envelope()
    log.append(a)
    log.append(b)
    log.remove(a.id)
    log.close()
    pending, _, _ = reopen(path)
    assert set(pending) == {b.id}


def test_empty_log_leaves_no_files(tmp_path):
    log = DiskLog(tmp_path / "data")
    env = envelope()
    log.append(env)
    log.remove(env.id)
    log.close()
    assert os.listdir(tmp_path / "data") == []


def test_begin_without_end_counts_the_attempt(tmp_path):
    path = tmp_path / "data"
    log = DiskLog(path)
    a, b = envelope(), envelope()
    log.append(a)
    log.append(b)
    log.begin([a])
    abandon(log)
    pending, _, crashed = reopen(path)
    assert crashed == {a.id}
    assert pending[a.id].attempt == 1 and pending[b.id].attempt == 0


def test_crash_looping_task_goes_dead_after_max_retries(tmp_path):
    """A task that kills its process every time is buried, not replayed forever."""
    path = tmp_path / "data"
    code = """
        import os, sys, greenqueue, gevent
        from tests.log import disk_tasks
        rt = greenqueue.Runtime(path=sys.argv[1], concurrency=1).start()
        if sys.argv[2] == "enqueue":
            disk_tasks.suicide.enqueue()
        rt.join(timeout=10)
        print("DEAD", [d.error["message"] for d in rt.dead()])
        rt.stop()
    """
    runs = [run_child(code, path, "enqueue", check=False)]
    runs += [run_child(code, path, "again", check=False) for _ in range(2)]
    assert [p.returncode for p in runs] == [-9, -9, -9]  # attempts 1, 2 and 3 (max_retries=2)
    final = run_child(code, path, "again")
    assert "process died during attempt 3" in final.stdout, final.stdout + final.stderr


def test_runtime_replays_after_stop(tmp_path, make_runtime):
    path = tmp_path / "data"
    rt = make_runtime(backend="disk", path=path, concurrency=1)
    disk_tasks.attempts.clear()
    disk_tasks.gate.clear()
    disk_tasks.held.enqueue("first")
    gevent.sleep(0.01)
    tasks.record.enqueue("second")
    later_id = tasks.record.enqueue("later", delay=3600)
    rt.stop(timeout=0.05)  # "first" is interrupted, "second" never started
    assert "second" not in tasks.seen
    disk_tasks.gate.set()
    rt2 = make_runtime(backend="disk", path=path)
    assert rt2.join(timeout=5)
    assert "second" in tasks.seen
    assert disk_tasks.attempts == [("first", 1), ("first", 1)]  # interrupted: not counted
    delayed = {env.id: env for env in rt2.log.pending()}
    assert later_id in delayed and delayed[later_id].publish_at > 1e9


def test_rotation_copies_only_pending_and_guards_against_loops(tmp_path, make_runtime):
    path = tmp_path / "data"
    rt = make_runtime(backend="disk", path=path, segment_size=4096, fsync_interval=0.02)
    far = [tasks.record.enqueue(i, delay=3600) for i in range(200)]  # ~20 KB of far-future
    soon = [tasks.record.enqueue(f"soon{i}", delay=0.05 + i * 0.002) for i in range(100)]
    for i in range(300):
        tasks.record.enqueue(f"now{i}")
    deadline = gevent.Timeout(10)
    with deadline:
        while sum(1 for s in tasks.seen if isinstance(s, str)) < 400:
            gevent.sleep(0.02)
    gevent.sleep(0.3)  # let the flusher rotate a few times if it would loop
    info = rt.log.info()
    assert info["segments"] == 1
    assert info["limit"] >= 4096
    rt.stop()
    pending, _, _ = reopen(path)
    assert set(pending) == set(far)
    assert sorted(s for s in tasks.seen if str(s).startswith("soon")) == \
        sorted(f"soon{i}" for i in range(100))
    assert not set(soon) & set(pending)


def test_delayed_tasks_coming_due_during_the_copy_run_once(tmp_path, make_runtime, monkeypatch):
    monkeypatch.setattr(disk, "COPY_CHUNK", 10)
    path = tmp_path / "data"
    rt = make_runtime(backend="disk", path=path, segment_size=2048, fsync_interval=0.01)
    due = [tasks.record.enqueue(f"due{i}", delay=0.02 * (i % 10)) for i in range(300)]
    with gevent.Timeout(10):
        while len([s for s in tasks.seen if str(s).startswith("due")]) < 300:
            gevent.sleep(0.01)
    rt.stop()
    runs = [s for s in tasks.seen if str(s).startswith("due")]
    assert sorted(runs) == sorted(f"due{i}" for i in range(300))  # each exactly once
    pending, _, _ = reopen(path)
    assert not set(due) & set(pending)


def test_crash_in_the_middle_of_rotation_loses_nothing(tmp_path):
    path = tmp_path / "data"
    code = """
        import os, sys, gevent
        from greenqueue.log import disk
        from greenqueue.log.format import HEADER_SIZE
        from tests.log.helpers import envelope
        disk.COPY_CHUNK = 5
        log = disk.DiskLog(sys.argv[1])
        envs = [envelope(publish_at=4e9) for _ in range(100)]
        for env in envs:
            log.append(env)
        print(" ".join(e.id for e in envs), flush=True)
        def crash_soon():
            paths = disk.segment_paths(sys.argv[1])
            while len(paths) < 2 or os.path.getsize(paths[1]) <= HEADER_SIZE:
                gevent.sleep(0)
                paths = disk.segment_paths(sys.argv[1])
            os._exit(0)         # the copy has written a chunk or two
        gevent.spawn(crash_soon)
        log._rotate()
    """
    out = run_child(code, path).stdout.split()
    old, new = segment_paths(path)  # both segments present, the new one part-copied
    assert HEADER_SIZE < os.path.getsize(new) < os.path.getsize(old)
    pending, _, _ = reopen(path)
    assert set(pending) == set(out)


def test_signed_log_refuses_tampered_records(tmp_path, caplog):
    path = tmp_path / "data"
    log = DiskLog(path, secret="s3cret")
    good, bad = envelope(payload=b"good-payload"), envelope(payload=b"evil-payload")
    log.append(good)
    log.append(bad)
    segment = segment_paths(path)[0]
    abandon(log)
    data = bytearray(open(segment, "rb").read())
    frames = []  # the frame offsets, as the reader itself finds them
    scan(bytes(data), "s3cret", lambda kind, body, at: frames.append((at, body)))
    (start, _), = [(at, body) for at, body in frames if b"evil-payload" in body]
    magic, kind, length, _ = _frame.unpack_from(data, start)
    at = data.index(b"evil-payload", start)
    data[at:at + 4] = b"EVIL"
    # recompute the CRC so that only the signature can catch the change
    body = bytes(data[start + FRAME_SIZE:start + FRAME_SIZE + length])
    _frame.pack_into(data, start, magic, kind, length, zlib.crc32(body, kind))
    open(segment, "wb").write(data)
    with caplog.at_level(logging.WARNING):
        pending, _, _ = reopen(path, secret="s3cret")
    assert set(pending) == {good.id}
    assert "failed their signature" in caplog.text
    pending, _, _ = reopen(path)  # without the secret nothing signed is trusted
    assert pending == {}


def test_write_error_raises_log_write_error(tmp_path):
    """RLIMIT_FSIZE makes writes past 64 KB fail with EFBIG, like a full disk."""
    code = """
        import resource, signal, sys, greenqueue
        from tests import tasks
        rt = greenqueue.Runtime(path=sys.argv[1]).start()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        acked = 0
        try:
            for i in range(100000):
                tasks.record.enqueue("x" * 100)
                acked += 1
        except greenqueue.LogWriteError as exc:
            print("ERROR", acked, exc)
        else:
            print("NO ERROR")
        import os; os._exit(0)
    """
    out = run_child(code, tmp_path / "data").stdout
    assert out.startswith("ERROR"), out
    acked = int(out.split()[1])
    assert acked > 100
    pending, _, _ = reopen(tmp_path / "data")
    assert len(pending) == acked  # everything acknowledged before the error is intact


def test_unwritable_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/greenqueue-data"  # even root cannot create it
    else:
        target = tmp_path / "ro"
        os.mkdir(target, 0o500)
    with pytest.raises(greenqueue.LogWriteError, match="data directory"):
        DiskLog(target)


def test_undecodable_task_goes_to_the_dead_set_with_the_reason(tmp_path, make_runtime):
    path = tmp_path / "data"
    log = DiskLog(path)
    lost = envelope(name="no_such_module_anywhere:task", payload=b"\x80\x05(NN)}N\x94.")
    log.append(lost.replace(payload=__import__("pickle").dumps((None, (), {}, None))))
    log.close()
    rt = make_runtime(backend="disk", path=path)
    tasks.record.enqueue("still runs")
    assert rt.join(timeout=5)
    assert "still runs" in tasks.seen
    (dead,) = rt.dead()
    assert dead.id == lost.id and "no_such_module_anywhere" in dead.error["message"]


def test_torn_tail_is_the_end_not_an_error(tmp_path, caplog):
    path = tmp_path / "data"
    log = DiskLog(path)
    envs = [envelope() for _ in range(10)]
    for env in envs:
        log.append(env)
    abandon(log)
    segment = segment_paths(path)[0]
    with open(segment, "ab") as f:
        f.write(b"\xa7\x01\x50\x00")  # half a frame header
    with caplog.at_level(logging.WARNING):
        pending, _, _ = reopen(path)
    assert set(pending) == {e.id for e in envs}
    assert "torn tail of 4 bytes" in caplog.text and segment in caplog.text
    assert os.path.getsize(segment) > HEADER_SIZE


def test_durable_enqueue_waits_for_a_shared_fsync(tmp_path, make_runtime, monkeypatch):
    """Group commit: 50 greenlets enqueue with durable=True; a few fsyncs cover them all."""
    fsyncs = []
    real = disk._off_hub

    def counting(fn, *args):
        if fn is os.fsync:
            fsyncs.append(args)
        return real(fn, *args)
    monkeypatch.setattr(disk, "_off_hub", counting)
    rt = make_runtime(backend="disk", path=tmp_path / "data", fsync_interval=60)
    before = len(fsyncs)
    done = []
    greenlets = [gevent.spawn(lambda i=i: done.append(
        tasks.record.enqueue(f"durable{i}", delay=3600, durable=True))) for i in range(50)]
    gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert len(done) == 50
    assert 1 <= len(fsyncs) - before < 50
    assert not rt.log.dirty  # everything written is covered by an fsync


def test_rotation_copies_each_pending_task_once(tmp_path):
    from greenqueue.log.inspect import summarize
    path = tmp_path / "data"
    log = DiskLog(path, segment_size=1 << 20)
    a, b, c = envelope(publish_at=4e9), envelope(publish_at=4e9), envelope()
    for env in (a, b, c):
        log.append(env)
    retried = a.replace(attempt=1, publish_at=4.5e9)
    log.append(retried)
    log.append(retried.replace(attempt=2))
    log.remove(c.id)
    log.begin([b])
    gevent.spawn(log._rotate).join()
    (segment,) = segment_paths(path)
    report = summarize(segment)
    assert report["records"]["add"] == 2 and report["records"]["begin"] == 1
    abandon(log)
    pending, _, crashed = reopen(path)
    assert set(pending) == {a.id, b.id} and crashed == {b.id}
    assert pending[a.id].attempt == 2 and pending[a.id].publish_at == 4.5e9


def test_replay_counts_the_immediate_tasks_that_block_rotation(tmp_path):
    path = tmp_path / "data"
    log = DiskLog(path)
    now_a, now_b, later, done = envelope(), envelope(), envelope(publish_at=4e9), envelope()
    for env in (now_a, now_b, later, done):
        log.append(env)
    log.append(now_b.replace(publish_at=4.1e9))   # retried: delayed now
    log.remove(done.id)
    log.bury(now_a, {"type": "E", "message": "m", "traceback": ""})
    log.close()
    again = DiskLog(path)
    try:
        assert again.immediate == 0
        fresh = envelope()
        again.append(fresh)
        assert again.immediate == 1
    finally:
        again.close()
