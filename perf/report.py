"""Print a benchmark's row and write perf/results/<scenario>.json with machine facts."""
import json
import os
import platform
import sys
import time

import gevent
import psutil

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def machine():
    return {
        "python": sys.version.split()[0], "gevent": gevent.__version__,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def emit(scenario, parameters, results):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{scenario}.json"), "w") as f:
        json.dump({"scenario": scenario, "machine": machine(), "parameters": parameters,
                   "results": results}, f, indent=2)
    cells = "  ".join(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in results.items())
    print(f"{scenario:<16} {cells}")
