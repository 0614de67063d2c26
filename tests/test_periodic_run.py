"""Periodic tasks under ``greenqueue run --workers 4``: one leader per data directory, and a
new one within seconds after ``kill -9`` of the leader."""
import os
import signal
import time

from tests.serving import procs, run_server, wait_until  # noqa: F401 - procs is a fixture


def read_ticks(path):
    if not path.exists():
        return []
    return [(int(pid), float(at)) for pid, at in
            (line.split() for line in path.read_text().splitlines() if line.strip())]


def test_four_workers_run_an_every_second_schedule_once_a_second(tmp_path, procs):  # noqa: F811
    ticks = tmp_path / "ticks"
    server = run_server(tmp_path, "--workers", "4", app="tests.periodic_app:app",
                        env={"GQ_TICKS": str(ticks)})
    procs.append(server)
    wait_until(lambda: len(read_ticks(ticks)) >= 2, timeout=30, what="the first ticks")
    start = read_ticks(ticks)[-1][1]
    wait_until(lambda: time.time() > start + 10.2, timeout=20, what="ten seconds")
    window = [t for t in read_ticks(ticks) if start < t[1] <= start + 10]
    assert 8 <= len(window) <= 12, window           # ~10: once a second in total, not 4x
    assert len({pid for pid, _ in window}) == 1     # one leader ran them all

    leader, last = read_ticks(ticks)[-1]
    os.kill(leader, signal.SIGKILL)
    wait_until(lambda: any(pid != leader for pid, _ in read_ticks(ticks)), timeout=20,
               what="another process to take the schedule over")
    first_new = min(at for pid, at in read_ticks(ticks) if pid != leader)
    assert first_new - last <= 5.0, (last, first_new)  # a gap of a few seconds at most
    wait_until(lambda: time.time() > first_new + 5.2, timeout=20, what="five more seconds")
    after = [t for t in read_ticks(ticks) if first_new < t[1] <= first_new + 5]
    assert 3 <= len(after) <= 7, after
    assert len({pid for pid, _ in after}) == 1
