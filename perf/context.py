"""What every scenario gets: the mode, sizes, repetitions and the limit measured in this run."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_DISK_LOG = "greenqueue.log.disk is not in this checkout yet"


class Context:
    def __init__(self, quick=False, repeat=3, tasks=None):
        self.quick = quick
        self.repeat = repeat
        self.tasks = tasks          # overrides every scenario's task count when set
        self.limit = None           # medians of the limit scenario, set by it
        self.limit_runs = None      # (tasks, repetitions) of that measurement
        self.rows = []

    def size(self, full, quick):
        """A scenario's task count: ``--tasks`` if given, else by mode."""
        if self.tasks is not None:
            return self.tasks
        return quick if self.quick else full

    def ratio(self, value, key):
        if not self.limit or not self.limit.get(key) or value is None:
            return None
        return value / self.limit[key]


def disk_backend():
    """Whether greenqueue's disk log exists in this checkout (it landed after the harness)."""
    return importlib.util.find_spec("greenqueue.log.disk") is not None


def in_child(function, timeout=600, **kwargs):
    """Run ``perf.<module>:<function>(**kwargs)`` in a fresh monkey-patched interpreter and
    return its JSON result: a clean process for start-up times and RSS growth."""
    proc = subprocess.run(
        [sys.executable, "-m", "perf.child", function, json.dumps(kwargs)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{function} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
