"""http: a WSGI app served by ``greenqueue run`` on loopback under ``wrk``, idle and while
100 000-task batches drain in the background of the same process.

Server: ``greenqueue run perf.http_app:app`` (one process, disk log, access log off when the
command offers that), pinned to nothing; load generator: ``wrk -t1 -c50 --latency`` (Debian's
package, installed with apt-get when missing) on the other core. Each repetition measures an
idle window, then a window with background load (see perf/http_app.py): requests/s and the
50th and 99th percentile latency from wrk, and the tasks processed during the loaded window.
Target (issue 6): p99 with tasks <= 1.5 x idle p99.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from perf.context import ROOT
from perf.report import Row, emit, medians, skipped

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def ensure_wrk():
    if shutil.which("wrk"):
        return None
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return None if shutil.which("wrk") else "wrk is not installed and apt-get could not install it"


def greenqueue_command():
    """argv prefix that runs ``greenqueue``, or None with the reason it is not there."""
    launcher = os.path.join(ROOT, "bin", "greenqueue")
    argv = [sys.executable, launcher]
    if not os.path.exists(launcher):
        return None, "bin/greenqueue is missing"
    probe = subprocess.run(argv + ["run", "--help"], capture_output=True, text=True, cwd=ROOT)
    if probe.returncode != 0:
        return None, "`greenqueue run` is not in this checkout yet (issue 5)"
    return argv, probe.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"greenqueue run exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"greenqueue run did not answer on port {port} in {timeout} s")


def wrk(port, seconds, connections=50):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {m.group(1): float(m.group(2)) * UNITS[m.group(3)]
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "socket_errors": errors.group(1) if errors else "",
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as r:
        return r.read()


def run(ctx):
    seconds = 3 if ctx.quick else 10
    params = {"wrk": "-t1 -c50 --latency", "window_s": seconds, "repeat": ctx.repeat,
              "batch": 100_000, "backend": "disk"}
    argv, help_or_reason = greenqueue_command()
    reason = ensure_wrk() if argv else help_or_reason
    if reason:
        return skipped("http", params, reason)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="gq-http-")
    cmd = argv + ["run", "perf.http_app:app", "--bind", f"127.0.0.1:{port}",
                  "--data-dir", tmp]
    if "--no-access-log" in help_or_reason:
        cmd.append("--no-access-log")
    if "--log-level" in help_or_reason:
        cmd += ["--log-level", "warning"]
    params["server"] = " ".join(["greenqueue"] + cmd[2:])
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    runs = []
    try:
        wait_for(port, proc)
        wrk(port, 1)  # warm-up
        for _ in range(ctx.repeat):
            idle = wrk(port, seconds)
            get(port, "/load/start")
            busy = wrk(port, seconds)
            load = json.loads(get(port, "/load/stop"))
            runs.append({**{f"idle_{k}": v for k, v in idle.items()},
                         **{f"busy_{k}": v for k, v in busy.items()},
                         "tasks_enqueued": load["enqueued"],
                         "tasks_processed": load["processed"],
                         "tasks_per_s": load["processed"] / seconds,
                         "batches_drained": load["batches_drained"],
                         "drain_s": min(load["drain_s"], default=None)})
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    m = medians(runs)
    p99_ratio = m["busy_p99_ms"] / m["idle_p99_ms"]
    rows = [Row("http", "idle: requests/s", m["idle_requests_per_s"], "/s"),
            Row("http", "idle: p50 / p99 latency",
                f"{m['idle_p50_ms']:.2f} / {m['idle_p99_ms']:.2f} ms"),
            Row("http", "tasks draining: requests/s", m["busy_requests_per_s"], "/s"),
            Row("http", "tasks draining: p50 / p99 latency",
                f"{m['busy_p50_ms']:.2f} / {m['busy_p99_ms']:.2f} ms", "", None,
                "p99 <= 1.5× idle", p99_ratio <= 1.5),
            Row("http", "tasks draining: p99 / idle p99", f"{p99_ratio:.2f}×"),
            Row("http", "tasks enqueued during the window", m["tasks_enqueued"] / seconds, "/s"),
            Row("http", "tasks processed during the window", m["tasks_per_s"], "/s",
                ctx.ratio(m["tasks_per_s"], "end_to_end_per_s"))]
    m["p99_ratio"] = p99_ratio
    emit("http", params, m, runs, rows)
    return rows
