"""``python -m perf``: run the benchmark scenarios, print the table, write perf/results/*.json.

    python -m perf --quick                      # every scenario, small sizes (< 2 minutes)
    python -m perf                              # full sizes (the figures the issues quote)
    python -m perf --scenario limit --scenario peers
    python -m perf --quick --scenario limit --tasks 2000   # the smoke test's run

The ``limit`` scenario always runs first (even when not asked for) because every other figure is
also printed as a ratio to it, measured in the same run. See perf/README.md for what each
scenario measures and how each peer is configured.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from perf import report  # noqa: E402
from perf.context import Context  # noqa: E402

SCENARIOS = {  # name -> module with run(ctx) returning report.Row objects
    "limit": "perf.scenarios.limit",
    "core": "perf.core",
    "throughput": "perf.scenarios.throughput",
    "delayed": "perf.scenarios.delayed",
    "replay": "perf.scenarios.replay",
    "http": "perf.scenarios.http",
    "peers": "perf.peers",
    "shared": "perf.scenarios.shared",
}


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: the whole run takes under 2 minutes")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions per figure; the table shows their median (>= 3)")
    parser.add_argument("--tasks", type=int, default=None,
                        help="override the task count of every scenario (for smoke tests)")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the resulting table into perf/README.md")
    opts = parser.parse_args(argv)
    if opts.repeat < 1:
        parser.error("--repeat must be >= 1")
    return opts


def main(argv=None):
    opts = parse(sys.argv[1:] if argv is None else argv)
    names = opts.scenario or list(SCENARIOS)
    names = ["limit"] + [n for n in dict.fromkeys(names) if n != "limit"]
    ctx = Context(quick=opts.quick, repeat=opts.repeat, tasks=opts.tasks)
    started = time.monotonic()
    print(f"greenqueue perf: {'quick' if opts.quick else 'full'} mode, "
          f"{opts.repeat} repetitions, scenarios: {', '.join(names)}", flush=True)
    print("  ".join(f"{c:<{w}}" for c, w in zip(report.HEADER, (12, 34, 22, 8, 22, 6))))
    failed = []
    for name in names:
        module = importlib.import_module(SCENARIOS[name])
        try:
            ctx.rows.extend(module.run(ctx))
        except Exception as exc:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            row = report.Row(name, "error", f"failed: {type(exc).__name__}: {exc}")
            report.emit(name, {"quick": opts.quick}, {"error": str(exc)}, rows=[row])
            ctx.rows.append(row)
    if len(names) > 1:  # the limit again, to show how much the machine drifted meanwhile
        from perf.scenarios import limit
        ctx.rows.extend(limit.recheck(ctx))
    m = report.machine()
    table = report.markdown(ctx.rows)
    heading = (f"Measured {m['date']} with `python -m perf{' --quick' if opts.quick else ''}` "
               f"on {m['cpu']}, {m['cpus']} cores, {m['memory_gib']} GiB, {m['platform']}, "
               f"Python {m['python']}, gevent {m['gevent']}, greenqueue {m['greenqueue']}; "
               f"{opts.repeat} repetitions, medians; took {time.monotonic() - started:.0f} s.")
    os.makedirs(report.RESULTS, exist_ok=True)
    with open(os.path.join(report.RESULTS, "TABLE.md"), "w") as f:
        f.write(heading + "\n\n" + table + "\n")
    print("\n" + heading + "\n\n" + table, flush=True)
    if opts.update_readme:
        update_readme(heading + "\n\n" + table)
    return 1 if failed else 0


BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def update_readme(text):
    path = os.path.join(os.path.dirname(__file__), "README.md")
    with open(path) as f:
        readme = f.read()
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
