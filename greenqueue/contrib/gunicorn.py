"""Run greenqueue inside gunicorn's gevent workers: one runtime per worker process.

Use the hooks from your gunicorn config file::

    # gunicorn.conf.py
    from greenqueue.contrib.gunicorn import post_fork, post_worker_init, worker_exit  # noqa

    gunicorn -k gevent -w 4 -c gunicorn.conf.py app:application

or load this module as the config itself: ``gunicorn -k gevent -c
python:greenqueue.contrib.gunicorn app:application``.

- ``post_fork`` starts the runtime of the new worker (its log segment in the data directory,
  replaying whatever a dead worker left there) and its control socket for ``greenqueue stats``;
- ``post_worker_init`` wraps the app in the request-id middleware (``X-Request-Id`` in and out,
  and the id on every log line of the request and of the tasks it enqueues);
- ``worker_exit`` drains: running tasks get up to the graceful timeout, the rest stay logged.

Settings come from the same ``GREENQUEUE_*`` variables as ``greenqueue run``: ``DATA_DIR``
(default ./greenqueue-data), ``BACKEND``, ``CONCURRENCY``, ``FSYNC_INTERVAL``, ``BACKPRESSURE``,
``GRACEFUL_TIMEOUT`` (default 15 s, at most gunicorn's own ``graceful_timeout``) and
``LOG_LEVEL`` (used only when nothing configured logging: then lines carry the request id).
"""
import logging
import os

logger = logging.getLogger("greenqueue.gunicorn")
_process = {}   # what this worker process started: runtime, control


def _env(name, default, convert=str):
    value = os.environ.get(f"GREENQUEUE_{name}")
    return default if value in (None, "") else convert(value)


def _truthy(value):
    return value.strip().lower() in ("1", "true", "yes", "on")


def post_fork(server, worker):
    """Start this worker's runtime (gunicorn calls it in the worker right after the fork)."""
    if "gevent" not in type(worker).__module__:
        logger.warning("greenqueue runs tasks in greenlets: serve with `gunicorn -k gevent`; "
                       "under %s a task's blocking I/O stalls the worker", type(worker).__name__)
    else:
        from gevent import monkey
        monkey.patch_all()  # the gevent worker patches later; the runtime's greenlets need it now
    from ..boot import configure_logging, prepare_data_dir
    from ..control import serve_stats
    from ..metrics import snapshot
    from ..runtime import Runtime

    if not logging.getLogger().handlers:
        configure_logging(_env("LOG_LEVEL", "info"))
    data_dir = prepare_data_dir(_env("DATA_DIR", "greenqueue-data"))
    runtime = Runtime(backend=_env("BACKEND", "disk"), path=data_dir,
                      concurrency=_env("CONCURRENCY", 100, int),
                      fsync_interval=_env("FSYNC_INTERVAL", 0.5, float),
                      backpressure=_env("BACKPRESSURE", False, _truthy)).start()
    control = serve_stats(data_dir, lambda: snapshot(runtime, {
        "role": "gunicorn worker", "data_dir": data_dir}))
    _process.update(runtime=runtime, control=control)
    logger.info("greenqueue runtime started in gunicorn worker %d (%s)", os.getpid(),
                runtime.log.describe())


def post_worker_init(worker):
    """Wrap the loaded app in the request-id middleware."""
    from ..wsgi import RequestIdMiddleware
    if not isinstance(worker.wsgi, RequestIdMiddleware):
        worker.wsgi = RequestIdMiddleware(worker.wsgi)


def worker_exit(server, worker):
    """Drain this worker's runtime: running tasks finish or stay in the log for the next one."""
    runtime = _process.pop("runtime", None)
    control = _process.pop("control", None)
    if runtime is not None:
        timeout = min(_env("GRACEFUL_TIMEOUT", 15.0, float),
                      float(getattr(server.cfg, "graceful_timeout", 30)))
        runtime.stop(timeout=timeout)
    if control is not None:
        control.stop()
