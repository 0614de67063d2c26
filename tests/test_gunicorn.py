"""greenqueue.contrib.gunicorn under a real ``gunicorn -k gevent``."""
import os
import shutil
import signal
import sys

import pytest

from tests.serving import BACKEND, ROOT, Proc, control_sockets, procs, stats_json

__all__ = ["procs"]
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or \
    shutil.which("gunicorn")
pytestmark = pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed")


def start_gunicorn(tmp_path, workers=1):
    data = tmp_path / "data"
    proc = Proc([GUNICORN, "-k", "gevent", "-w", str(workers), "-b", "127.0.0.1:0",
                 "--graceful-timeout", "10", "-c", "python:greenqueue.contrib.gunicorn",
                 "examples.wsgi_app:app"], tmp_path / "gunicorn.log", cwd=ROOT,
                env={"GREENQUEUE_DATA_DIR": str(data), "GREENQUEUE_BACKEND": BACKEND})
    proc.wait_for_url(r"Listening at: http://([\d.]+:\d+)")
    proc.wait_for("greenqueue runtime started in gunicorn worker", count=workers)
    return proc, data


def test_gunicorn_workers_run_tasks_with_the_request_id_and_drain_on_exit(tmp_path, procs):
    gunicorn, data = start_gunicorn(tmp_path, workers=2)
    procs.append(gunicorn)

    response = gunicorn.get("/report", params={"user": "g1", "seconds": 0},
                            headers={"X-Request-Id": "gunicorn-req-1"})
    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == "gunicorn-req-1"
    task_id = response.json()["task_id"]
    gunicorn.wait_for(rf"\[gunicorn-req-1\] examples\.tasks: .*done \(task {task_id}\)")

    report = stats_json(data)
    assert len(report["processes"]) == 2
    assert {p["role"] for p in report["processes"]} == {"gunicorn worker"}
    assert report["total"]["processed"] == 1 and report["total"]["enqueued"] == 1

    # a task running when gunicorn is told to stop finishes before the worker exits
    slow = gunicorn.get("/report", params={"user": "g2", "seconds": 1}).json()["task_id"]
    gunicorn.wait_for(rf"started \(task {slow},")
    gunicorn.signal(signal.SIGTERM)
    assert gunicorn.wait(30) == 0
    output = gunicorn.output()
    assert f"done (task {slow})" in output
    assert output.index(f"done (task {slow})") < output.index("Shutting down: Master")
    assert control_sockets(data) == []
