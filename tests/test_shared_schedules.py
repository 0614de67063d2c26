"""Periodic schedules on a shared backend: one leader across every process, and a takeover
when the leader is killed (after its lease on Redis; when its connection drops on PostgreSQL).
"""
import os
import signal
import subprocess
import sys

import pytest

from greenqueue.log import open_log
from tests import backends
from tests.helpers import wait_until
from tests.log.helpers import ROOT

CHILD = """
from gevent import monkey; monkey.patch_all()
import os, sys, gevent, greenqueue
from tests import shared_tasks
greenqueue.schedule(shared_tasks.work, every=3600, args=("tick",), name="tick")
rt = greenqueue.Runtime(backend=sys.argv[1], path=sys.argv[2], lease=1.0).start()
status = sys.argv[3]
while True:
    with open(status + ".tmp", "w") as f:
        f.write("leader" if rt.scheduler.leader else "follower")
    os.rename(status + ".tmp", status)
    gevent.sleep(0.02)
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request):
    url = backends.shared_url(request.param)
    yield url
    backends.drop(url)


def test_one_leader_across_processes_and_a_takeover_after_kill_9(url, tmp_path):
    env = {**os.environ, "GQ_RAN": str(tmp_path / "ran.txt")}
    procs, status = {}, {}
    for name in "ab":
        status[name] = tmp_path / f"status-{name}"
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(tmp_path / f"data-{name}"),
             str(status[name])], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        def roles():
            return {name: path.read_text() if path.exists() else None
                    for name, path in status.items()}
        wait_until(lambda: sorted(map(str, roles().values())) == ["follower", "leader"],
                   timeout=15, what="one leader and one follower")
        leader = next(name for name, role in roles().items() if role == "leader")
        follower = "b" if leader == "a" else "a"
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(timeout=10)
        wait_until(lambda: status[follower].read_text() == "leader", timeout=15,
                   what="the follower to take over")
        log = open_log(url)  # the leaders' record lives on the server, for the next leader
        try:
            assert "last" in log.load_state()["tick"]
        finally:
            log.close()
    except AssertionError as exc:
        raise AssertionError(f"{exc}; children said: {stop(procs)}") from None
    finally:
        stop(procs)


def stop(procs):
    said = {}
    for name, proc in procs.items():
        if proc.returncode is None:
            proc.kill()
        said[name] = proc.communicate(timeout=10)[1][-2000:] if proc.stderr else ""
    return said
