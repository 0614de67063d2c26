"""What a shared log adds to the contract: claims in batches, leases renewed, leases lost.

Each test opens two logs on one Redis prefix or PostgreSQL schema, as two processes would.
"""
import time

import gevent
import pytest

from greenqueue.log import open_log
from tests import backends
from tests.log.test_contract import envelope


@pytest.fixture(params=["redis", "postgres"])
def two_logs(request):
    url = backends.shared_url(request.param)
    opened = []

    def make(lease=30.0):
        log = open_log(url, lease=lease)
        opened.append(log)
        return log
    yield make
    for log in opened:
        log.close()
    backends.drop(url)


def claim_all(log, limit=100):
    return [env for env, _ in log.claim(limit)]


def test_claims_take_due_tasks_by_priority_and_are_disjoint(two_logs):
    a, b = two_logs(), two_logs()
    low = [envelope() for _ in range(3)]
    high = envelope(priority=9)
    later = envelope(publish_at=time.time() + 3600)
    for env in low + [high, later]:
        a.append(env)
    first = claim_all(a, 2)
    assert [env.id for env in first] in ([high.id, low[0].id], [low[0].id, high.id])
    rest = claim_all(b)
    assert sorted(env.id for env in rest) == sorted(env.id for env in low[1:])
    assert claim_all(a) == [] and claim_all(b) == []  # the delayed one is not due
    assert len(a.pending()) == 5  # claimed tasks are still pending until removed


def test_a_held_claim_is_renewed_and_an_abandoned_one_comes_back_counted(two_logs):
    holder, other = two_logs(lease=1.0), two_logs(lease=1.0)
    env = envelope()
    holder.append(env)
    assert [e.id for e in claim_all(holder)] == [env.id]
    deadline = time.monotonic() + 2.0   # twice the lease: the renewer keeps it
    while time.monotonic() < deadline:
        assert claim_all(other) == []
        gevent.sleep(0.1)
    holder.close()  # gone without acknowledging: a crash, as the server sees it
    deadline = time.monotonic() + 10
    while not (got := other.claim(10)):
        assert time.monotonic() < deadline, "the abandoned claim never came back"
        gevent.sleep(0.05)
    ((back, crashed),) = got
    assert back.id == env.id and crashed and back.attempt == env.attempt + 1


def test_remove_after_claim_finishes_for_everyone(two_logs):
    a, b = two_logs(), two_logs()
    env = envelope()
    a.append(env)
    claim_all(a)
    a.remove(env.id)
    a.sync()
    assert b.pending() == [] and claim_all(b) == []
