"""Results: print a scenario's row, write perf/results/<scenario>.json, build the table.

Every JSON file carries the machine (CPU, cores, memory, kernel), the versions of Python,
gevent and greenqueue (and of a peer where one ran), the parameters, the raw repetitions and
their medians, so a figure can be checked against the run that produced it.
"""
import json
import os
import platform
import statistics
import sys
import time

import gevent
import psutil

# PERF_RESULTS redirects the output (the smoke test writes to a temporary directory so that
# the committed results always come from a real run).
RESULTS = os.environ.get("PERF_RESULTS") or os.path.join(os.path.dirname(__file__), "results")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    import greenqueue
    return {
        "python": sys.version.split()[0], "gevent": gevent.__version__,
        "greenqueue": greenqueue.__version__, "cpu": cpu_model(),
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.gmtime()),
    }


def medians(runs):
    """Median of each numeric key over repetitions (dicts with the same keys)."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = runs[0][key]
    return out


def fmt(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


class Row:
    """One figure of the table: scenario, name, value, unit, ratio to limit, target."""

    def __init__(self, scenario, figure, value, unit="", ratio=None, target="", met=None):
        self.scenario, self.figure, self.value, self.unit = scenario, figure, value, unit
        self.ratio, self.target, self.met = ratio, target, met

    def cells(self):
        value = self.value if isinstance(self.value, str) else f"{fmt(self.value)} {self.unit}"
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}×"
        met = {None: "", True: "yes", False: "**no**"}[self.met]
        return [self.scenario, self.figure, value.strip(), ratio, self.target, met]


HEADER = ["scenario", "figure", "median", "× limit", "target", "met"]


def emit(scenario, parameters, results, runs=None, rows=(), extra=None, echo=None):
    """Write perf/results/<scenario>.json and print the scenario's row(s)."""
    os.makedirs(RESULTS, exist_ok=True)
    doc = {"scenario": scenario, "machine": machine(), "parameters": parameters,
           "results": results}
    if runs is not None:
        doc["repetitions"] = runs
    if extra:
        doc.update(extra)
    doc["table"] = [dict(zip(HEADER, r.cells())) for r in rows]
    with open(os.path.join(RESULTS, f"{scenario}.json"), "w") as f:
        json.dump(doc, f, indent=2, default=str)
    if rows:
        for r in (rows if echo is None else echo):
            print("  ".join(f"{c:<{w}}" for c, w in zip(r.cells(), (12, 34, 22, 8, 22, 6))),
                  flush=True)
    else:
        cells = "  ".join(f"{k}={fmt(v)}" for k, v in results.items())
        print(f"{scenario:<12} {cells}", flush=True)
    return doc


def skipped(scenario, parameters, reason):
    """A scenario that cannot run here says why, in the table and in its JSON."""
    rows = [Row(scenario, "not run", f"skipped: {reason}")]
    emit(scenario, parameters, {"skipped": reason}, rows=rows)
    return rows


def markdown(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
