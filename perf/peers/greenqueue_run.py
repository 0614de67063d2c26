"""greenqueue's side of the peers scenario, run in a fresh process by the harness.

Same protocol as the peers (peer_common.py): enqueue ``n`` no-op tasks one by one from one
greenlet while no worker can run (enqueue never yields), then let the worker greenlets drain
them (``join``). Disk log when this checkout has it (default fsync interval), else memory.
"""
import shutil
import tempfile

import greenqueue
from perf import noop_tasks


def measure(n, repeat, backend):
    runs = []
    for _ in range(repeat):
        tmp = tempfile.mkdtemp(prefix="gq-peers-")
        try:
            with greenqueue.Runtime(backend=backend, path=tmp) as rt:
                run = noop_tasks.enqueue_and_drain(rt, n)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        runs.append({"enqueue_per_s": run["enqueue_per_s"], "process_per_s": run["process_per_s"]})
    return runs
