"""Several processes on one data directory: each runs its own tasks; the dead's are adopted."""
import os
import signal
import subprocess
import sys
from collections import defaultdict

from greenqueue.log.disk import segment_paths
from tests.log.helpers import ROOT

CHILD = """
from gevent import monkey; monkey.patch_all()
import sys, gevent, greenqueue
from tests.log import disk_tasks
name, mode = sys.argv[2], sys.argv[3]
rt = greenqueue.Runtime(path=sys.argv[1], fsync_interval=0.05).start()
if mode == "enqueue":
    for i in range(5):
        disk_tasks.note_ran.enqueue(f"{name}-{i}", delay=0.8)
print("READY", flush=True)
gevent.sleep(float(sys.argv[4]))
rt.join(timeout=5)
rt.stop()
print("DONE", flush=True)
"""


def start(path, ran, name, mode, linger):
    env = {**os.environ, "GQ_RAN": str(ran), "GQ_ROUND": name}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), name, mode, str(linger)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY"), line + proc.stderr.read()
    return proc


def test_live_owners_keep_their_tasks_and_dead_ones_are_adopted(tmp_path):
    path, ran = tmp_path / "data", tmp_path / "ran.txt"
    a = start(path, ran, "A", "enqueue", 30)
    b = start(path, ran, "B", "enqueue", 1.5)
    assert len(segment_paths(path)) == 2  # one segment each; B did not take A's
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    c = start(path, ran, "C", "adopt", 1.5)
    for proc in (b, c):
        out, err = proc.communicate(timeout=30)
        assert "DONE" in out, err
    lives = defaultdict(list)
    for line in ran.read_text().splitlines():
        life, label = line.split()
        lives[label].append(life)
    assert {label: who for label, who in lives.items()} == {
        **{f"A-{i}": ["C"] for i in range(5)},   # the dead owner's tasks ran in the adopter
        **{f"B-{i}": ["B"] for i in range(5)},   # the live owner's only in the owner
    }
    assert os.listdir(path) == []  # everyone finished: nothing left behind
