"""Real server processes for the tests of ``greenqueue run``, ``stats`` and the gunicorn hooks.

Servers bind port 0 and the tests read the port the kernel chose from the server's own log
line, so two runs never race for a port. Every wait polls a condition against a deadline.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "bin", "greenqueue")
HAS_DISK = importlib.util.find_spec("greenqueue.log.disk") is not None
needs_disk = pytest.mark.skipif(not HAS_DISK, reason="the disk log (greenqueue/log/disk.py, "
                                "issue 4) is not in this tree; restart tests need it")
BACKEND = "disk" if HAS_DISK else "memory"


def wait_until(condition, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A subprocess whose stderr+stdout go to a file that the test can search."""

    def __init__(self, argv, log_path, cwd=ROOT, env=None, new_session=False):
        self.log_path = str(log_path)
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.popen = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=full_env, start_new_session=new_session)
        self.pid = self.popen.pid
        self.url = None

    def output(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def wait_for(self, pattern, timeout=15.0, count=1):
        """The match of ``pattern`` (a regex) in the output, once it appears ``count`` times."""
        regex = re.compile(pattern)

        def found():
            matches = list(regex.finditer(self.output()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}) before "
                                     f"{pattern!r} appeared:\n{self.output()[-4000:]}")
            return None
        return wait_until(found, timeout, what=f"{pattern!r} in the output")

    def wait_for_url(self, pattern=r"on http://([\d.]+:\d+)", timeout=20.0):
        self.url = "http://" + self.wait_for(pattern, timeout).group(1)
        return self.url

    def get(self, path, **kwargs):
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)

    def post(self, path, **kwargs):
        kwargs.setdefault("timeout", 10)
        return requests.post(self.url + path, **kwargs)

    def signal(self, signum=signal.SIGTERM):
        self.popen.send_signal(signum)

    def wait(self, timeout=30.0):
        return self.popen.wait(timeout)

    def terminate(self, timeout=30.0):
        """SIGTERM, then the exit status (a graceful stop returns 0)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def greenqueue(*args):
    return [sys.executable, LAUNCHER, *map(str, args)]


def run_server(tmp_path, *args, app="examples.wsgi_app:app", name="server", env=None,
               data_dir=None, new_session=False):
    """Start ``greenqueue run`` on a free port; returns a Proc with ``url`` set."""
    data_dir = data_dir or tmp_path / "data"
    argv = greenqueue("run", app, "--bind", "127.0.0.1:0", "--data-dir", data_dir,
                      "--backend", BACKEND, *args)
    proc = Proc(argv, tmp_path / f"{name}.log", env=env, new_session=new_session)
    proc.wait_for_url()
    return proc


def stats_json(data_dir):
    out = subprocess.run(greenqueue("stats", "--json", "--data-dir", data_dir), cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def control_sockets(data_dir):
    if not os.path.isdir(data_dir):
        return []
    return sorted(n for n in os.listdir(data_dir) if n.startswith("control-"))


@pytest.fixture
def procs():
    """Processes started by the test; killed (and their logs closed) at its end."""
    started = []
    yield started
    for proc in started:
        proc.close()
