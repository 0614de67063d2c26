"""Argument checks shared by ``Runtime`` and the enqueue paths: a clear error for bad input.

Settings fail with ConfigError when a runtime is built, delays with TaskError at enqueue, so
a mistake surfaces where it was made, not later in a worker.
"""
import datetime as _dt
import math
import numbers
import time

from .errors import ConfigError, TaskError


def due_time(delay, delay_until):
    """Epoch seconds when a task may run, from ``delay`` seconds or ``delay_until``."""
    if delay is not None and delay_until is not None:
        raise TaskError("give delay or delay_until, not both")
    if delay is not None:
        if isinstance(delay, _dt.timedelta):
            delay = delay.total_seconds()
        if (not isinstance(delay, numbers.Real) or isinstance(delay, bool)
                or not 0 <= delay < math.inf):  # NaN fails the comparison too
            raise TaskError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
        return time.time() + delay
    if isinstance(delay_until, _dt.datetime):
        return delay_until.timestamp()  # naive datetimes are local time, as documented
    if isinstance(delay_until, numbers.Real) and not isinstance(delay_until, bool):
        if not math.isfinite(delay_until):
            raise TaskError(f"delay_until must be a finite epoch time, not {delay_until!r}")
        return float(delay_until)
    raise TaskError(f"delay_until must be a datetime or an epoch number, not {delay_until!r}")


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    return value


def _non_negative_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, not {value!r}")
    return value


def _positive_float(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _bool(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {value!r}")
    return value
