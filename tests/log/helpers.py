"""Helpers for the disk log tests: envelopes, reopening a directory, child processes."""
import os
import subprocess
import sys
import textwrap

from greenqueue.envelope import Envelope, new_id
from greenqueue.log.disk import DiskLog

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def envelope(publish_at=0.0, priority=0, payload=b"\x80\x05N.", name="tests.tasks:noop"):
    return Envelope(new_id(), name, payload, priority, publish_at, 0, 1.0)


def abandon(log):
    """Leave a log as kill -9 leaves it: no flush of batched removes, no fsync, locks released."""
    log._flusher.kill()
    for _, fd in log.segments:
        os.close(fd)


def reopen(path, **options):
    """What a fresh process would see: open the directory, read it, close again."""
    log = DiskLog(path, **options)
    try:
        return {env.id: env for env in log.pending()}, {d.id: d for d in log.dead()}, log.crashed()
    finally:
        log.close()


def run_child(code, *args, check=True, timeout=60, env=None):
    """Run python code in a child process (patched by gevent first), cwd at the repo root."""
    source = "from gevent import monkey; monkey.patch_all()\n" + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", source, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
