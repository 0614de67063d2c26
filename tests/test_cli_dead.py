"""``greenqueue dead``: the dead set through live processes' control sockets, and on the log
files when no process runs; ``retry --all`` over 10 000 tasks with a real server."""
import fcntl
import json
import os
import pty
import select
import subprocess
import time

import pytest
from click.testing import CliRunner

import greenqueue as gq
from greenqueue.cli import cli
from greenqueue.envelope import Envelope, new_id
from greenqueue.log import open_log
from greenqueue.log.disk import DiskLog
from tests import backends, tasks
from tests.dead_app import runs
from tests.serving import ROOT, greenqueue, needs_disk, procs, run_server, stats_json, wait_until

__all__ = ["procs"]
APP = "tests.dead_app:app"
FRAGILE = "tests.dead_app:fragile"


def dead(*args, check=True):
    out = subprocess.run(greenqueue("dead", *map(str, args)), cwd=ROOT, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def dead_json(data_dir, *args):
    return json.loads(dead("list", "--json", "--data-dir", data_dir, *args).stdout)


def start(tmp_path, *args, name="server"):
    env = {"GQ_BROKEN": str(tmp_path / "broken"), "GQ_RAN": str(tmp_path / "ran")}
    return run_server(tmp_path, "--graceful-timeout", "1", *args,
                      app=APP, env=env, name=name)


def fill(server, n, **query):
    response = server.get("/fill", params={"n": n, **query}, timeout=60)
    assert response.status_code == 200
    return response.json()["ids"]


@needs_disk
def test_list_show_retry_purge_through_a_live_process(tmp_path, procs):
    data = tmp_path / "data"
    (tmp_path / "broken").touch()
    server = start(tmp_path)
    procs.append(server)
    hostile = fill(server, 2, label="<script>alert(1)</script>")
    others = fill(server, 1, task="other")
    wait_until(lambda: len(dead_json(data)) == 3, what="three dead tasks")

    listed = dead_json(data)
    assert {d["id"] for d in listed} == set(hostile + others)
    assert all(d["pid"] == server.pid and d["attempts"] == 1 for d in listed)
    assert [d["id"] for d in dead_json(data, "--task", FRAGILE)] == hostile
    human = dead("list", "--data-dir", data).stdout
    assert "3 dead task(s)" in human and "Broken: broken on purpose" in human

    shown = json.loads(dead("show", hostile[0], "--json", "--data-dir", data).stdout)
    assert shown["args"] == ["0"] and shown["kwargs"] == {"label": "'<script>alert(1)</script>'"}
    assert "raise Broken" in shown["traceback"] and shown["first_failed_at"]
    text = dead("show", hostile[0], "--data-dir", data).stdout
    for line in ("task:", "arguments:", "attempts:", "first failure:", "last failure:",
                 "Traceback (most recent call last)"):
        assert line in text
    missing = dead("show", "nosuchid", "--data-dir", data, check=False)
    assert missing.returncode == 1 and "no dead task with id nosuchid" in missing.stderr

    os.unlink(tmp_path / "broken")
    partly = dead("retry", hostile[0], "nosuchid", "--data-dir", data, check=False)
    assert partly.returncode == 1 and "retried 1 dead task(s)" in partly.stdout
    wait_until(lambda: runs(tmp_path) == ["<script>alert(1)</script> 0"], what="the retry ran")
    assert dead("purge", others[0], "--data-dir", data).stdout.startswith("purged 1")
    assert [d["id"] for d in dead_json(data)] == [hostile[1]]
    assert stats_json(data)["processes"][0]["dead"] == 1


@needs_disk
def test_with_no_process_the_commands_work_on_the_log_under_its_locks(tmp_path, procs):
    data = tmp_path / "data"
    (tmp_path / "broken").touch()
    server = start(tmp_path)
    procs.append(server)
    ids = fill(server, 3, label="offline")
    wait_until(lambda: len(dead_json(data)) == 3, what="three dead tasks")
    assert server.terminate() == 0

    assert [d["id"] for d in dead_json(data)] == ids          # read from the files
    assert "pid" not in dead_json(data)[0]
    shown = json.loads(dead("show", ids[0], "--json", "--data-dir", data).stdout)
    assert shown["args"] == ["0"] and "Broken" in shown["traceback"]
    os.unlink(tmp_path / "broken")
    out = dead("retry", ids[0], "--data-dir", data).stdout
    assert "retried 1 dead task(s); they run when a process next starts" in out
    assert dead("purge", ids[1], "--data-dir", data).stdout.startswith("purged 1")
    assert [d["id"] for d in dead_json(data)] == [ids[2]]

    # a segment someone holds (as a live process would) is not theirs to change
    segments = sorted(p for p in os.listdir(data) if p.endswith(".wal"))
    held = [os.open(data / name, os.O_RDWR) for name in segments]
    try:
        for fd in held:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = dead("purge", ids[2], "--data-dir", data, check=False)
        assert refused.returncode == 1 and "no dead task with id" in refused.stderr
    finally:
        for fd in held:
            os.close(fd)

    again = start(tmp_path, name="again")
    procs.append(again)
    wait_until(lambda: runs(tmp_path) == ["offline 0"], what="the retried task ran on start")
    assert [d["id"] for d in dead_json(data)] == [ids[2]]


@needs_disk
def test_retry_all_reruns_ten_thousand_dead_tasks_with_a_progress_bar(tmp_path, procs):
    data = tmp_path / "data"
    (tmp_path / "broken").touch()
    server = start(tmp_path)
    procs.append(server)
    assert fill(server, 10000, label="many") == 10000
    wait_until(lambda: stats_json(data)["processes"][0]["dead"] == 10000, timeout=60,
               interval=0.2, what="10 000 dead tasks")
    os.unlink(tmp_path / "broken")

    out = dead("retry", "--all", "--task", FRAGILE, "--data-dir", data)
    assert "retrying 10000 task(s)" in out.stderr       # the progress bar's label
    assert out.stdout.strip() == "retried 10000 dead task(s)"
    wait_until(lambda: len(runs(tmp_path)) >= 10000, timeout=60, interval=0.2,
               what="10 000 re-runs")
    assert sorted(runs(tmp_path)) == sorted(f"many {n}" for n in range(10000))
    figures = stats_json(data)["processes"][0]
    assert figures["dead"] == 0 and figures["processed"] == 10000


def test_usage_errors():
    runner = CliRunner()
    for args, message in ((["retry"], "give the ids"), (["purge", "x", "--all"], "give the ids"),
                          (["retry", "x", "--task", "t"], "--task goes with --all")):
        result = runner.invoke(cli, ["dead", *args])
        assert result.exit_code == 2 and message in result.output


@needs_disk
def test_with_workers_the_answers_of_every_worker_are_merged(tmp_path, procs):
    data = tmp_path / "data"
    (tmp_path / "broken").touch()
    server = start(tmp_path, "--workers", "2")
    procs.append(server)
    ids = [i for n in range(8) for i in fill(server, 2, label=f"w{n}")]
    wait_until(lambda: len(dead_json(data)) == 16, what="sixteen dead tasks")
    assert {d["id"] for d in dead_json(data)} == set(ids)
    os.unlink(tmp_path / "broken")
    assert dead("retry", "--all", "--yes", "--data-dir", data).stdout.strip() == \
        "retried 16 dead task(s)"
    wait_until(lambda: len(runs(tmp_path)) == 16, what="sixteen re-runs")
    assert dead_json(data) == []


def _answer_on_a_terminal(args, answer):
    """Run ``greenqueue dead ARGS`` with a pseudo-terminal as stdin/stdout; type ``answer`` when
    asked. Returns (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(greenqueue("dead", *map(str, args)), cwd=ROOT, stdin=slave,
                            stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"[y/N]" not in output and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                output += os.read(master, 4096)
        os.write(master, answer + b"\n")
        while True:
            try:
                chunk = os.read(master, 4096) if select.select([master], [], [], 5)[0] else b""
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(30), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@needs_disk
def test_all_asks_for_confirmation_on_a_terminal(tmp_path):
    data = tmp_path / "data"
    log = DiskLog(data)
    env = Envelope(new_id(), FRAGILE, b"")
    log.append(env)
    log.bury(env.replace(attempt=1),
             {"type": "Broken", "message": "m", "traceback": "", "failed_at": time.time()})
    log.close()
    status, out = _answer_on_a_terminal(["purge", "--all", "--data-dir", data], b"n")
    assert "Purge 1 dead task(s)? [y/N]" in out and status == 1 and "Aborted" in out
    assert len(dead_json(data)) == 1
    status, out = _answer_on_a_terminal(["purge", "--all", "--data-dir", data], b"y")
    assert status == 0 and "purged 1 dead task(s)" in out
    assert dead_json(data) == []


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_backend_lists_retries_and_purges_the_clusters_dead_set_on_the_server(kind):
    url = backends.shared_url(kind)
    try:
        with gq.Runtime(backend=url) as rt:
            ids = [tasks.boom.enqueue(i) for i in range(3)]
            wait_until(lambda: len(rt.dead()) == 3, timeout=10, what="three dead tasks")
            rt.fetcher.stop()  # from here on, only the CLI touches the server
        listed = json.loads(dead("list", "--json", "--backend", url).stdout)
        assert sorted(d["id"] for d in listed) == sorted(ids)
        assert {d["error"] for d in listed} == {"ValueError"}
        shown = json.loads(dead("show", ids[0], "--json", "--backend", url).stdout)
        assert shown["args"] == ["0"]
        out = dead("retry", ids[0], "--backend", url)
        assert "retried 1 dead task(s)" in out.stdout
        out = dead("purge", "--all", "--yes", "--backend", url)
        assert "purged 2 dead task(s)" in out.stdout
        log = open_log(url)
        try:
            assert log.dead() == [] and [e.id for e in log.pending()] == [ids[0]]
        finally:
            log.close()
        missing = dead("retry", ids[1], "--backend", url, check=False)
        assert missing.returncode == 1 and f"no dead task with id {ids[1]}" in missing.stderr
    finally:
        backends.drop(url)
    unreachable = dead("list", "--backend", "redis://127.0.0.1:1/0", check=False)
    assert unreachable.returncode == 1 and "cannot reach Redis" in unreachable.stderr
