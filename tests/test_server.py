"""``greenqueue run``: real server processes, real requests, real signals, real kill -9."""
import os
import re
import signal
import socket
import subprocess
import sys

import gevent
import psutil
import pytest
import requests

from tests.serving import (LAUNCHER, ROOT, Proc, control_sockets, greenqueue, needs_disk,
                           procs, run_server, stats_json, wait_until)

__all__ = ["procs"]  # the fixture, imported for pytest

STARTED = r"report for user {user}: started \(task (\w+), attempt (\d+), pid (\d+)\)"


def enqueue(server, user, seconds, request_id=None, **query):
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = server.get("/report", params={"user": user, "seconds": seconds, **query},
                          headers=headers)
    assert response.status_code == 202, response.text
    return response


@pytest.mark.parametrize("app, path, method", [
    ("examples.wsgi_app:app", "/report?user=rid&seconds=0.3", "get"),
    ("examples.flask_app:create_app()", "/users/42/report?seconds=0.3", "post"),
])
def test_request_id_round_trips_into_the_task_log(tmp_path, procs, app, path, method):
    server = run_server(tmp_path, app=app)
    procs.append(server)
    response = getattr(server, method)(path, headers={"X-Request-Id": "req-abc-123"})
    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == "req-abc-123"
    task_id = response.json()["task_id"]
    line = server.wait_for(rf".*\[req-abc-123\] examples\.tasks: .*done \(task {task_id}\)")
    assert f"[{server.pid}]" in line.group(0)
    # the request's own lines and its access-log line carry the id too
    assert re.search(r"\[req-abc-123\] examples\.(wsgi|flask)_app: enqueued", server.output())
    assert re.search(r"\[req-abc-123\] greenqueue\.access: .*202", server.output())

    # without a header the server makes an id, and a silly one is replaced
    made = server.get("/")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    replaced = server.get("/", headers={"X-Request-Id": "x" * 500})
    assert replaced.headers["X-Request-Id"] != "x" * 500


def test_requests_are_served_while_tasks_run(tmp_path, procs):
    server = run_server(tmp_path, "--concurrency", "50", "--graceful-timeout", "0.5")
    procs.append(server)
    for n in range(50):
        enqueue(server, f"busy{n}", 30)
    server.wait_for(r"report for user busy\d+: started", count=50)
    # every task worker is inside a task; the app still answers, over and over
    for _ in range(20):
        assert server.get("/").status_code == 200
    # with every worker busy, two more wait: the queue latency figures see them
    enqueue(server, "queued1", 0)
    enqueue(server, "queued2", 0)
    figures = stats_json(tmp_path / "data")["processes"][0]
    assert figures["in_flight"] == 50 and figures["processed"] == 0
    assert figures["ready"] == 2 and figures["oldest_ready_age"] >= 0
    assert figures["queued_bytes"] > 0
    assert server.terminate() == 0


SLOW_APP = """
import logging
import gevent

log = logging.getLogger("slow_app")


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        log.info("slow request started")
        gevent.sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished"]
"""


def test_sigterm_finishes_in_flight_requests_and_closes_idle_connections(tmp_path, procs):
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    server = Proc(greenqueue("run", "slow_app:app", "--bind", "127.0.0.1:0", "--data-dir",
                             tmp_path / "data", "--graceful-timeout", "30"),
                  tmp_path / "slow.log", cwd=tmp_path)
    procs.append(server)
    server.wait_for_url()
    idle = requests.Session()                   # a keep-alive connection, left idle
    assert idle.get(server.url + "/").text == "finished"
    in_flight = gevent.spawn(server.get, "/slow")
    server.wait_for("slow request started")
    server.signal(signal.SIGTERM)
    server.wait_for("draining")
    assert in_flight.get(timeout=10).text == "finished"
    # the idle connection does not hold the drain for its 30 s
    assert server.wait(10) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=5)


def test_an_app_that_starts_its_own_runtime_is_served_with_it(tmp_path, procs):
    (tmp_path / "own_runtime.py").write_text(
        "import greenqueue\n"
        "greenqueue.start(backend='memory', concurrency=3)\n\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n")
    server = Proc(greenqueue("run", "own_runtime:app", "--bind", "127.0.0.1:0", "--data-dir",
                             tmp_path / "data"), tmp_path / "own.log", cwd=tmp_path)
    procs.append(server)
    server.wait_for_url()
    assert server.get("/").text == "ok"
    assert "the app started its own greenqueue runtime" in server.output()
    assert stats_json(tmp_path / "data")["processes"][0]["concurrency"] == 3
    assert server.terminate() == 0


def restart_and_see_task_start(tmp_path, procs, user, task_id):
    """Start again on the same data directory: the task left in the log starts on its first
    attempt still (a shutdown uses up no attempt). Returns the new server's output."""
    again = run_server(tmp_path, "--graceful-timeout", "0.5", name="restart")
    procs.append(again)
    match = again.wait_for(STARTED.format(user=user))
    assert (match.group(1), match.group(2)) == (task_id, "1")
    assert again.terminate() == 0
    return again.output()


@needs_disk
def test_sigterm_drains_and_a_long_task_runs_after_restart(tmp_path, procs):
    server = run_server(tmp_path, "--graceful-timeout", "3")
    procs.append(server)
    short_id = enqueue(server, "short", 1).json()["task_id"]
    long_id = enqueue(server, "long", 60).json()["task_id"]
    server.wait_for(STARTED.format(user="long"))
    server.wait_for(STARTED.format(user="short"))
    assert server.terminate() == 0
    output = server.output()
    assert f"done (task {short_id})" in output
    assert f"done (task {long_id})" not in output
    assert control_sockets(tmp_path / "data") == []

    output = restart_and_see_task_start(tmp_path, procs, "long", long_id)
    assert "report for user short" not in output


@needs_disk
def test_second_signal_exits_at_once_and_loses_nothing(tmp_path, procs):
    server = run_server(tmp_path, "--graceful-timeout", "120")
    procs.append(server)
    task_id = enqueue(server, "slow", 60).json()["task_id"]
    server.wait_for(STARTED.format(user="slow"))
    server.signal(signal.SIGINT)
    server.wait_for("draining")
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 1           # far sooner than the 120 s drain
    assert "exiting now" in server.output()

    restart_and_see_task_start(tmp_path, procs, "slow", task_id)


@needs_disk
def test_workers_share_the_port_and_a_killed_worker_is_replaced_and_its_tasks_run(tmp_path,
                                                                                  procs):
    supervisor = run_server(tmp_path, "--workers", "2", "--graceful-timeout", "2")
    procs.append(supervisor)
    parent = psutil.Process(supervisor.pid)
    wait_until(lambda: len(parent.children()) == 2, what="two workers")
    by_pid = {}
    for n in range(6):   # the kernel decides which worker accepts: maybe all go to one
        body = enqueue(supervisor, f"w{n}", 3, delay=2).json()
        by_pid.setdefault(body["pid"], []).append(body["task_id"])
    victim = max(by_pid, key=lambda pid: len(by_pid[pid]))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in [c.pid for c in parent.children()]
               and len(parent.children()) == 2, what="a replacement worker")
    supervisor.wait_for(rf"worker \d \(pid {victim}\) exited with signal SIGKILL")
    for task_id in by_pid[victim]:
        match = supervisor.wait_for(rf"started \(task {task_id}, attempt \d, pid (\d+)\)",
                                    timeout=20)
        assert int(match.group(1)) != victim
    for task_ids in by_pid.values():
        for task_id in task_ids:
            supervisor.wait_for(rf"done \(task {task_id}\)", timeout=20)
    assert supervisor.get("/").status_code == 200
    assert supervisor.terminate() == 0
    assert not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE
    # only the killed worker could not remove its socket; stats cleans it up
    assert control_sockets(tmp_path / "data") == [f"control-{victim}.sock"]


def test_ctrl_c_at_a_terminal_drains_workers_once(tmp_path, procs):
    # a terminal sends SIGINT to the whole foreground process group; workers must still get a
    # single signal (from their supervisor) and drain, not take it as a second one and quit
    supervisor = run_server(tmp_path, "--workers", "2", "--graceful-timeout", "20",
                            new_session=True)
    procs.append(supervisor)
    parent = psutil.Process(supervisor.pid)
    wait_until(lambda: len(parent.children()) == 2, what="two workers")
    task_id = enqueue(supervisor, "ctrl-c", 1).json()["task_id"]
    supervisor.wait_for(rf"started \(task {task_id},")
    os.killpg(supervisor.pid, signal.SIGINT)
    assert supervisor.wait(30) == 0
    output = supervisor.output()
    assert f"done (task {task_id})" in output
    assert "exiting now" not in output


def test_workers_leave_when_their_supervisor_is_killed(tmp_path, procs):
    supervisor = run_server(tmp_path, "--workers", "2", "--graceful-timeout", "1")
    procs.append(supervisor)
    parent = psutil.Process(supervisor.pid)
    workers = wait_until(lambda: len(parent.children()) == 2 and parent.children(),
                         what="two workers")
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(10)

    def gone(proc):
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_until(lambda: all(gone(w) for w in workers), timeout=20, what="orphaned workers to exit")
    assert supervisor.output().count("stopped (supervisor gone)") == 2


def test_max_tasks_recycles_the_worker_without_losing_tasks(tmp_path, procs):
    supervisor = run_server(tmp_path, "--max-tasks", "3", "--graceful-timeout", "2")
    procs.append(supervisor)
    parent = psutil.Process(supervisor.pid)
    first = wait_until(lambda: [c.pid for c in parent.children()], what="a worker")[0]
    for n in range(3):
        enqueue(supervisor, f"r{n}", 0)
    supervisor.wait_for("recycling: ran")
    wait_until(lambda: [c.pid for c in parent.children()] not in ([], [first]),
               what="a fresh worker")
    supervisor.wait_for(r"report for user r\d: done", count=3)
    assert supervisor.wait_for(r"worker 0 \(pid (\d+)\) exited with status 0").group(1) == \
        str(first)


def test_max_rss_recycles_a_worker_past_the_limit(tmp_path, procs):
    # no Python process serves under 1 MB: the worker recycles as soon as it checks
    supervisor = run_server(tmp_path, "--max-rss", "1", "--graceful-timeout", "1")
    procs.append(supervisor)
    supervisor.wait_for(r"recycling: RSS \d+ MB is past 1 MB")
    supervisor.wait_for(r"exited with status 0 \(recycled\); starting a new one")
    supervisor.wait_for(r"worker 0 started", count=2)
    assert supervisor.terminate() == 0


def test_unix_socket_bind_replaces_a_stale_socket_file_and_removes_it_on_exit(tmp_path, procs):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)            # left behind by a killed server: nobody listens
    stale.close()
    server = Proc(greenqueue("run", "examples.wsgi_app:app", "--bind", f"unix:{path}",
                             "--data-dir", tmp_path / "data", "--backend", "memory"),
                  tmp_path / "unix.log")
    procs.append(server)
    server.wait_for(f"on unix:{path}")
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    client.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"X-Request-Id: " in answer
    assert server.terminate() == 0
    assert not os.path.exists(path)


# -- start-up errors ----------------------------------------------------------------------------

def start_fails(tmp_path, *args, cwd=ROOT):
    out = subprocess.run(greenqueue("run", *args), cwd=cwd, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stderr
    return out.stderr


def test_bad_targets_are_explained(tmp_path):
    data = ["--data-dir", tmp_path / "data", "--bind", "127.0.0.1:0"]
    err = start_fails(tmp_path, "examples.wsgi_app:missing", *data)
    assert "has no attribute 'missing'" in err and "Traceback" not in err
    err = start_fails(tmp_path, "no_such_module_here:app", *data)
    assert "no module named 'no_such_module_here'" in err and "Traceback" not in err
    err = start_fails(tmp_path, "examples.wsgi_app", *data)
    assert "MODULE:ATTR" in err
    err = start_fails(tmp_path, "examples.wsgi_app:log", *data)
    assert "not a WSGI application" in err

    (tmp_path / "broken_app.py").write_text("import json\n\n\ndef helper():\n"
                                            "    raise RuntimeError('boom at import')\n\n\n"
                                            "helper()\n")
    err = start_fails(tmp_path, "broken_app:app", *data, cwd=tmp_path)
    assert "RuntimeError: boom at import" in err
    assert "broken_app.py\", line 8" in err and "line 5, in helper" in err
    assert "boot.py" not in err and "importlib" not in err


def test_busy_port_and_unusable_data_dir_are_explained(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        err = start_fails(tmp_path, "examples.wsgi_app:app", "--bind", f"127.0.0.1:{port}",
                          "--data-dir", tmp_path / "data")
    finally:
        taken.close()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "already in use" in err

    (tmp_path / "a_file").write_text("not a directory")
    for workers in ("0", "2"):
        err = start_fails(tmp_path, "examples.wsgi_app:app", "--bind", "127.0.0.1:0",
                          "--workers", workers, "--data-dir", tmp_path / "a_file" / "data")
        assert "data directory" in err and "not usable" in err


def test_bad_target_under_workers_is_reported_once(tmp_path):
    err = start_fails(tmp_path, "examples.wsgi_app:missing", "--workers", "3", "--bind",
                      "127.0.0.1:0", "--data-dir", tmp_path / "data")
    assert err.count("has no attribute 'missing'") == 1


# -- the command line -----------------------------------------------------------------------------

def test_help_shows_every_option_with_its_environment_variable():
    out = subprocess.run(greenqueue("run", "--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    text = re.sub(r"\s+", " ", out.stdout)
    for option, env in [("--bind", "BIND"), ("--workers", "WORKERS"),
                        ("--concurrency", "CONCURRENCY"), ("--fsync-interval", "FSYNC_INTERVAL"),
                        ("--backpressure", "BACKPRESSURE"), ("--log-level", "LOG_LEVEL"),
                        ("--access-log", "ACCESS_LOG"), ("--graceful-timeout", "GRACEFUL_TIMEOUT"),
                        ("--max-rss", "MAX_RSS"), ("--max-tasks", "MAX_TASKS"),
                        ("--data-dir", "DATA_DIR")]:
        assert option in text and f"GREENQUEUE_{env}" in text, option
    assert "127.0.0.1:8000" in text and "greenqueue-data" in text and "default: 15" in text


def test_options_come_from_environment_variables(tmp_path, procs):
    server = run_server(tmp_path, env={"GREENQUEUE_ACCESS_LOG": "false",
                                       "GREENQUEUE_CONCURRENCY": "7"})
    procs.append(server)
    assert "7 task worker(s)" in server.output()
    server.get("/")
    enqueue(server, "env", 0)
    server.wait_for("report for user env: done")
    assert "greenqueue.access" not in server.output()


def test_python_dash_m_greenqueue_is_the_launcher(tmp_path, procs):
    out = subprocess.run([sys.executable, "-m", "greenqueue", "--help"], capture_output=True,
                         text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0 and "run" in out.stdout and "stats" in out.stdout
    proc = Proc([sys.executable, "-m", "greenqueue", "run", "examples.wsgi_app:app", "--bind",
                 "127.0.0.1:0", "--data-dir", tmp_path / "data", "--backend", "memory"],
                tmp_path / "m.log")
    procs.append(proc)
    proc.wait_for_url()
    assert proc.get("/").status_code == 200
    assert proc.terminate() == 0
    assert os.path.exists(LAUNCHER)


# -- the request-id middleware, in process ---------------------------------------------------------

def test_middleware_keeps_the_id_while_the_body_streams_and_forgets_it_on_close():
    from greenqueue import log_context
    from greenqueue.wsgi import ENVIRON_KEY, RequestIdMiddleware
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        seen.append(environ[ENVIRON_KEY])

        def body():
            seen.append(dict(log_context()).get("request_id"))
            yield b"streamed"
        return body()

    headers = []
    result = RequestIdMiddleware(app)({"HTTP_X_REQUEST_ID": "abc"},
                                      lambda status, h, exc_info=None: headers.extend(h))
    assert b"".join(result) == b"streamed"
    result.close()
    assert seen == ["abc", "abc"]
    assert ("X-Request-Id", "abc") in headers
    assert dict(log_context()) == {}   # the next request on a keep-alive greenlet starts clean


def test_middleware_leaves_an_id_set_by_the_app_alone():
    from greenqueue.wsgi import RequestIdMiddleware

    def app(environ, start_response):
        start_response("200 OK", [("x-request-id", "from-app")])
        return [b""]

    headers = []
    RequestIdMiddleware(app)({}, lambda status, h, exc_info=None: headers.extend(h)).close()
    assert headers == [("x-request-id", "from-app")]


def test_workers_on_a_shared_redis_log(tmp_path, procs):
    from tests.backends import drop, redis_url
    url = redis_url()
    try:
        supervisor = run_server(tmp_path, "--workers", "2", "--backend", url,
                                "--graceful-timeout", "1")
        procs.append(supervisor)
        wait_until(lambda: len(control_sockets(tmp_path / "data")) == 2, what="two workers")
        task_id = enqueue(supervisor, "shared", 0, request_id="shared-req").json()["task_id"]
        supervisor.wait_for(rf"\[shared-req\] examples\.tasks: .*done \(task {task_id}\)")
        report = stats_json(tmp_path / "data")
        assert len(report["processes"]) == 2
        assert all(p["log"].startswith("Redis") for p in report["processes"])
        assert report["total"]["processed"] == 1
        assert supervisor.terminate() == 0
    finally:
        drop(url)
