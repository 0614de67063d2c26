"""One serving process: the WSGI app and the task runtime side by side on one gevent hub.

Duties:
- start in an order that never serves a request before the log is replayed: data directory,
  app import, listening socket (or the one a supervisor hands down), runtime start (replay),
  control socket, then the WSGI server;
- SIGTERM/SIGINT: stop accepting, close idle keep-alive connections, let in-flight requests
  finish, give running tasks what is left of ``graceful_timeout``, exit 0. Unfinished tasks
  stay in the log and an attempt cut short by the shutdown keeps its retry budget. A second
  signal exits at once (exit status 1): the log already holds every acknowledged task;
- recycle: past ``max_tasks`` attempts or ``max_rss`` MB (each lowered by up to 10 % of
  jitter, so that workers started together do not recycle together) drain as on SIGTERM; the
  supervisor starts a fresh worker, which adopts this one's log;
- a supervised worker whose supervisor disappears drains and exits instead of lingering.

The caller (``greenqueue run`` through ``bin/greenqueue``) has monkey-patched already.
"""
import dataclasses
import logging
import math
import os
import random
import signal
import socket
import sys
import time

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from .boot import (STARTUP_ERROR_STATUS, StartupError, bound_address, configure_logging,
                   listen, load_app, prepare_data_dir, remove_socket_file)
from .context import log_context
from .control import serve_stats
from .errors import GreenqueueError
from .metrics import snapshot
from . import hub_monitor
from .run_metrics import wrap_app
from .runtime import Runtime, current_runtime
from .wsgi import ENVIRON_KEY, RequestIdMiddleware

logger = logging.getLogger("greenqueue.server")
access_logger = logging.getLogger("greenqueue.access")
WATCH_EVERY = 0.5       # seconds between checks of the recycling limits and the parent
JITTER = 0.10           # limits are lowered by up to this fraction, per process


@dataclasses.dataclass
class ServeOptions:
    """Everything ``greenqueue run`` takes; see ``greenqueue run --help``."""

    target: str
    bind: str = "127.0.0.1:8000"
    data_dir: str = "greenqueue-data"
    backend: str = "disk"
    workers: int = 0
    concurrency: int = 100
    fsync_interval: float = 0.5
    backpressure: bool = False
    log_level: str = "info"
    access_log: bool = True
    graceful_timeout: float = 15.0
    max_rss: float = None       # MB
    max_tasks: int = None
    metrics: bool = False       # serve Prometheus metrics at metrics_path, before the app
    metrics_path: str = "/metrics"
    metrics_bind: str = None    # HOST:PORT of a metrics-only server (the supervisor's)
    max_blocking_ms: float = 100.0  # name tasks that hold the hub longer (0: off)
    dashboard: str = None       # path prefix of the web dashboard (greenqueue/dashboard/)
    dashboard_token: str = None


class Handler(WSGIHandler):
    """Tracks whether a connection is inside a request, so a drain can close idle ones; logs
    each request's access line with its request id."""

    busy = False

    def handle(self):
        if self.socket.family in (socket.AF_INET, socket.AF_INET6):
            # headers and body may leave in two writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold the second one back ~40 ms on every keep-alive request
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connections = self.server.connections
        connections[self] = gevent.getcurrent()
        try:
            super().handle()
        finally:
            connections.pop(self, None)

    def handle_one_response(self):
        self.busy = True
        try:
            super().handle_one_response()
        finally:
            self.busy = False
            if self.server.draining:
                self.close_connection = True

    def log_request(self):
        request_id = (self.environ or {}).get(ENVIRON_KEY)
        if request_id is None:
            return super().log_request()
        with log_context(request_id=request_id):
            return super().log_request()


class Server(WSGIServer):
    draining = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = {}   # Handler -> its greenlet

    def drain(self, deadline):
        """Stop accepting, drop idle keep-alive connections, wait for requests until deadline."""
        self.draining = True
        self.close()
        for handler, greenlet in list(self.connections.items()):
            if not handler.busy:
                greenlet.kill(block=False)
        self.pool.join(timeout=max(0.0, deadline - time.monotonic()))
        self.pool.kill(block=True, timeout=1)


class Process:
    """A serving process; ``run()`` returns the exit status."""

    def __init__(self, options, listen_fd=None, ready_fd=None, parent_pid=None):
        self.options = options
        self.listen_fd = listen_fd
        self.ready_fd = ready_fd
        self.supervised = listen_fd is not None
        self.parent = parent_pid or (os.getppid() if self.supervised else None)
        self.stop_reason = None
        self._signals = 0
        self._stop = Event()
        self.runtime = None
        self.server = None
        self.control = None
        self.address = None
        self.limits = _jittered(options.max_tasks, options.max_rss)

    def run(self):
        opts = self.options
        data_dir = prepare_data_dir(opts.data_dir)
        app = load_app(opts.target)
        if self.listen_fd is not None:
            sock = socket.socket(fileno=self.listen_fd)
        else:
            sock = listen(opts.bind)
        self.address = bound_address(sock)
        self.runtime = current_runtime()
        if self.runtime is not None:
            # the app started one while it was imported (greenqueue.start(), or an enqueue)
            logger.warning("the app started its own greenqueue runtime (%s); serving with it, "
                           "so --data-dir/--backend/--concurrency do not apply to its tasks",
                           self.runtime.log.describe())
        else:
            try:
                self.runtime = Runtime(backend=opts.backend, path=data_dir,
                                       concurrency=opts.concurrency,
                                       fsync_interval=opts.fsync_interval,
                                       backpressure=opts.backpressure)
                self.runtime.start()  # replays the log: nothing is served before that is done
            except (OSError, GreenqueueError) as exc:
                raise StartupError(f"cannot start the task runtime: {exc}") from None
        self.control = serve_stats(data_dir, self.describe)
        if self.runtime.publisher is not None:  # a shared backend: the cluster sees us as stats do
            self.runtime.publisher.provider = lambda: self.describe(light=True)
        app = wrap_app(app, self.runtime, opts, data_dir, self.supervised)
        hub_monitor.start(opts.max_blocking_ms / 1000)
        if opts.dashboard:
            from .dashboard import mount
            app = mount(app, self.runtime, opts.dashboard, data_dir, opts.dashboard_token)
        self.server = Server(sock, RequestIdMiddleware(app), handler_class=Handler,
                             spawn=Pool(), log=access_logger if opts.access_log else None,
                             error_log=logger)
        self.server.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_signal, signum)
        logger.info("serving %s on %s (pid %d, %s, %d task worker(s))", opts.target,
                    self.address if self.address.startswith("unix:") else f"http://{self.address}",
                    os.getpid(), self.runtime.log.describe(), self.runtime.concurrency)
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"ready\n")
            except OSError:  # nobody reads: the supervisor is gone
                self.stop("supervisor gone")
            os.close(self.ready_fd)
        watcher = gevent.spawn(self._watch)
        self._stop.wait()
        watcher.kill(block=False)
        self._drain()
        return 0

    def stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stop.set()

    def _on_signal(self, signum):
        name = signal.Signals(signum).name
        self._signals += 1
        if self._signals == 1:  # a drain begun by recycling is not a first signal
            logger.info("%s: draining (up to %.0f s); a second signal exits at once", name,
                        self.options.graceful_timeout)
            self.stop(name)
            return
        logger.warning("%s again: exiting now; unfinished tasks stay in the log", name)
        try:
            self.runtime.dispatcher.abandon_running()
        except Exception:  # noqa: BLE001 - exit regardless; replay will count the attempt
            logger.exception("could not record the running tasks as interrupted")
        if self.control is not None:
            self.control.stop()
        logging.shutdown()
        os._exit(1)

    def _drain(self):
        deadline = time.monotonic() + self.options.graceful_timeout
        started = time.monotonic()
        self.server.drain(deadline)
        if not self.supervised:   # the supervisor owns a shared socket
            remove_socket_file(self.address)
        self.runtime.stop(timeout=max(0.0, deadline - time.monotonic()))
        if self.control is not None:
            self.control.stop()
        logger.info("stopped (%s) after %.1f s of drain", self.stop_reason,
                    time.monotonic() - started)

    def _watch(self):
        max_tasks, max_rss = self.limits
        counters = self.runtime.counters
        proc = None
        if max_rss:
            import psutil
            proc = psutil.Process()
        while True:
            gevent.sleep(WATCH_EVERY)
            if self.supervised and os.getppid() != self.parent:
                self.stop("supervisor gone")
            elif max_tasks and counters.processed + counters.failed >= max_tasks:
                logger.info("recycling: ran %d tasks (limit %d)",
                            counters.processed + counters.failed, max_tasks)
                self.stop("max-tasks")
            elif proc is not None and proc.memory_info().rss > max_rss:
                logger.info("recycling: RSS %.0f MB is past %.0f MB",
                            proc.memory_info().rss / 2**20, max_rss / 2**20)
                self.stop("max-rss")

    def describe(self, light=False):
        """What the control socket answers (and, ``light``, what a process on a shared backend
        publishes): the process's figures plus how it serves."""
        opts = self.options
        return snapshot(self.runtime, light=light, extra={
            "role": "worker" if self.supervised else "server",
            "target": opts.target,
            "bind": self.address,
            "data_dir": os.path.abspath(opts.data_dir),
            "concurrency": self.runtime.concurrency,
            "connections": len(self.server.connections) if self.server else 0,
            "draining": self.stop_reason is not None,
            "max_tasks": self.limits[0],
            "max_rss": self.limits[1],
        })


def _jittered(max_tasks, max_rss_mb):
    tasks = rss = None
    if max_tasks:
        tasks = max(1, math.ceil(max_tasks * (1 - random.uniform(0, JITTER))))
    if max_rss_mb:
        rss = int(max_rss_mb * 2**20 * (1 - random.uniform(0, JITTER)))
    return tasks, rss


def serve(options, listen_fd=None, ready_fd=None, parent_pid=None):
    """Run one serving process until it is stopped; returns its exit status."""
    try:
        configure_logging(options.log_level)
        return Process(options, listen_fd, ready_fd, parent_pid).run()
    except StartupError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return STARTUP_ERROR_STATUS
