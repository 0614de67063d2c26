"""``python -m perf.child module:function JSON``: one measurement in a fresh process.

Patches first (as ``greenqueue run`` does), calls ``perf.<module>.<function>(**JSON)`` and prints
its result as one JSON line on stdout.
"""
from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main():
    target, kwargs = sys.argv[1], json.loads(sys.argv[2])
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(f"perf.{module}"), function)(**kwargs)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
