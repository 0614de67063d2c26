"""One contract, every backend: the memory log earns its place by passing the disk log's tests,
and the shared logs (Redis, PostgreSQL: each test in its own key prefix or schema) theirs."""
import pytest

from greenqueue.envelope import Envelope, new_id
from greenqueue.log import open_log
from greenqueue.log.disk import DiskLog
from greenqueue.log.memory import MemoryLog
from tests import backends


@pytest.fixture(params=["memory", "disk", "redis", "postgres"])
def make_log(request, tmp_path):
    opened = []
    url = backends.shared_url(request.param) if request.param in ("redis", "postgres") else None

    def make():
        if url:
            log = open_log(url)
        else:
            log = MemoryLog() if request.param == "memory" else DiskLog(tmp_path / "data")
        opened.append(log)
        return log
    yield make
    for log in opened:
        log.close()
    if url:
        backends.drop(url)


def envelope(publish_at=0.0, priority=0, payload=b"\x80\x05N."):
    return Envelope(new_id(), "tests.tasks:noop", payload, priority, publish_at, 0, 1.0)


def ids(envs):
    return sorted(env.id for env in envs)


def test_append_then_pending(make_log):
    log = make_log()
    a, b = envelope(), envelope(publish_at=4e9, priority=3)
    log.append(a)
    log.append(b)
    assert ids(log.pending()) == ids([a, b])
    got = {env.id: env for env in log.pending()}
    assert got[b.id] == b


def test_remove_finishes(make_log):
    log = make_log()
    a, b = envelope(), envelope()
    log.append(a)
    log.append(b)
    log.remove(a.id)
    assert ids(log.pending()) == [b.id]


def test_append_again_replaces(make_log):
    log = make_log()
    a = envelope()
    log.append(a)
    retry = a.replace(attempt=1, publish_at=4e9)
    log.append(retry)
    assert log.pending() == [retry]


def test_bury_moves_to_dead_and_append_revives(make_log):
    log = make_log()
    a = envelope()
    log.append(a)
    log.begin([a])
    log.bury(a.replace(attempt=6), {"type": "ValueError", "message": "no", "traceback": "tb"})
    assert log.pending() == []
    (dead,) = log.dead()
    assert dead.id == a.id and dead.attempts == 6 and dead.error["message"] == "no"
    log.append(a)
    assert log.dead() == [] and ids(log.pending()) == [a.id]


def test_remove_purges_dead(make_log):
    log = make_log()
    a = envelope()
    log.append(a)
    log.bury(a, {"type": "E", "message": "m", "traceback": ""})
    log.remove(a.id)
    assert log.dead() == [] and log.pending() == []


def test_remove_unknown_is_harmless(make_log):
    log = make_log()
    log.remove("nope")
    assert log.pending() == []


def test_sync_returns(make_log):
    log = make_log()
    log.append(envelope())
    log.sync()
