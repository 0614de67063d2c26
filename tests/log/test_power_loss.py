"""Cut a real log at random offsets and flip random bytes: intact records always come back."""
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenqueue.log.disk import DiskLog, segment_paths
from greenqueue.log.format import HEADER_SIZE, scan
from tests.log.helpers import envelope


@pytest.fixture(scope="module")
def real_log(tmp_path_factory):
    """A segment written by DiskLog: adds, begins, removes, a retry and a burial."""
    path = tmp_path_factory.mktemp("power") / "data"
    log = DiskLog(path)
    envs = [envelope(publish_at=4e9 if i % 3 else 0.0, payload=os.urandom(20 + i))
            for i in range(40)]
    for i, env in enumerate(envs):
        log.append(env)
        if i % 4 == 0:
            log.begin([env])
            log.remove(env.id)
        if i % 7 == 0:
            log.append(env.replace(attempt=1, publish_at=5e9))
        if i % 11 == 0:
            log.bury(env.replace(attempt=3), {"type": "E", "message": "m", "traceback": "t"})
    log._flusher.kill()
    if log.removes:
        log._write(log._take_removes())
    segment = segment_paths(path)[0]
    data = open(segment, "rb").read()
    log.close()
    return data


def records(data):
    found = []
    result = scan(data, None, lambda kind, body, at: found.append((kind, at + 10, body)))
    return found, result


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_cut_anywhere_keeps_every_whole_record(real_log, data):
    cut = data.draw(st.integers(0, len(real_log)))
    whole, _ = records(real_log)
    got, result = records(real_log[:cut])
    expected = [r for r in whole if r[1] + len(r[2]) <= cut]
    assert got == expected
    assert all(d.tail for d in result.damage)  # a cut is never reported as mid-log corruption


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_flipped_bytes_hide_no_record_before_or_after(real_log, data):
    whole, _ = records(real_log)
    flips = data.draw(st.lists(st.tuples(st.integers(HEADER_SIZE, len(real_log) - 1),
                                         st.integers(1, 255)), min_size=1, max_size=4))
    damaged = bytearray(real_log)
    for at, xor in flips:
        damaged[at] ^= xor
    got, _ = records(bytes(damaged))
    hit = sorted(at for at, _ in flips)
    frame = 10
    for kind, start, body in whole:
        untouched = not any(start - frame <= at < start + len(body) for at in hit)
        if untouched:
            assert (kind, start, body) in got  # intact records around the damage come back
    assert set(got) <= set(whole)  # a damaged record is never taken for a good one


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_opening_a_damaged_directory_never_crashes(real_log, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("dmg") / "data"
    os.makedirs(path)
    damaged = bytearray(real_log[:data.draw(st.integers(0, len(real_log)))])
    for at in data.draw(st.lists(st.integers(0, max(len(damaged) - 1, 0)), max_size=3)):
        if damaged:
            damaged[at] ^= 0x5A
    with open(path / "00000001-deadbeef.wal", "wb") as f:
        f.write(damaged)
    log = DiskLog(path)
    log.pending()
    log.dead()
    log.close()
    shutil.rmtree(path)
