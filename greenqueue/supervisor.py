"""The pre-fork supervisor of ``greenqueue run --workers N``: runs no task, serves no request
(only ``--metrics-bind``, the figures of all its workers: greenqueue/run_metrics.py).

Duties:
- check the data directory and bind the listening socket once, then start N workers (fresh
  interpreters running the hidden ``greenqueue _worker`` command) that inherit the socket and
  share it; each worker owns its own log segment in the data directory;
- start the first worker alone and wait until it serves, so a bad target or a broken app is
  reported once, not N times, and the supervisor exits with that worker's status;
- when a worker dies (crash, ``kill -9``, recycling by ``--max-rss``/``--max-tasks``), start a
  new one in its slot: it adopts the dead worker's segment and runs its tasks. A worker that
  dies before it serves is restarted after a growing pause (up to 10 s), not in a hot loop;
- SIGTERM/SIGINT: pass one SIGTERM to every worker and wait for their drains; a second signal
  is passed on too (workers then exit at once). Workers live in their own process group, so
  the Ctrl-C that a terminal sends to the whole foreground group reaches only the supervisor,
  which passes it on exactly once.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from .boot import (STARTUP_ERROR_STATUS, StartupError, bound_address, configure_logging,
                   listen, prepare_data_dir, remove_socket_file)
from .run_metrics import serve_for_supervisor

logger = logging.getLogger("greenqueue.supervisor")
READY_TIMEOUT = 120.0    # seconds a worker may take to import the app and replay its log
MAX_BACKOFF = 10.0
# Workers get their own process group (a new session before Python 3.11), out of the reach of
# the terminal's Ctrl-C, which the supervisor passes on once.
OWN_PROCESS_GROUP = ({"process_group": 0} if sys.version_info >= (3, 11)
                     else {"start_new_session": True})
# Patch before anything is imported (``python -m greenqueue`` would import the package first).
WORKER_BOOT = ("from gevent import monkey; monkey.patch_all(); "
               "from greenqueue.cli import main; main()")


class Supervisor:
    def __init__(self, options):
        self.options = options
        self.listener = None
        self.workers = {}          # slot -> Popen
        self.stopping = False
        self.status = 0
        self._stopped = Event()
        self._signals = 0

    def run(self):
        opts = self.options
        try:
            configure_logging(opts.log_level)
            prepare_data_dir(opts.data_dir)
            self.listener = listen(opts.bind)
            self.metrics = serve_for_supervisor(opts)
        except StartupError as exc:
            print(f"Error: {exc}", file=sys.stderr, flush=True)
            return STARTUP_ERROR_STATUS
        os.set_inheritable(self.listener.fileno(), True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_signal, signum)
        logger.info("supervisor (pid %d) starting %d worker(s) for %s on http://%s",
                    os.getpid(), opts.workers, opts.target, bound_address(self.listener))
        first = self._spawn(0)
        if not self._wait_ready(first):
            if first.poll() is None:   # hung past READY_TIMEOUT, or stopped by a signal
                first.terminate()
            status = first.wait()
            logger.error("the first worker exited with status %s before serving; giving up",
                         status)
            return status if status == STARTUP_ERROR_STATUS else 1
        slots = [gevent.spawn(self._keep, 0, first)]
        slots += [gevent.spawn(self._keep, slot, None) for slot in range(1, opts.workers)]
        self._stopped.wait()
        gevent.joinall(slots)
        address = bound_address(self.listener)
        self.listener.close()
        remove_socket_file(address)
        logger.info("supervisor stopped")
        return self.status

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self, slot):
        read_fd, write_fd = os.pipe()
        spec = json.dumps(vars(self.options))
        argv = [sys.executable, "-c", WORKER_BOOT, "_worker", spec,
                "--listen-fd", str(self.listener.fileno()), "--ready-fd", str(write_fd),
                "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(argv, pass_fds=(self.listener.fileno(), write_fd),
                                **OWN_PROCESS_GROUP)
        os.close(write_fd)
        proc.ready_fd = read_fd
        self.workers[slot] = proc
        logger.info("worker %d started (pid %d)", slot, proc.pid)
        return proc

    def _wait_ready(self, proc):
        """True once the worker says it serves; False if it died (or hung) first."""
        fd = proc.ready_fd
        try:
            wait_read(fd, timeout=READY_TIMEOUT)
            return os.read(fd, 64).startswith(b"ready")
        except (OSError, gevent.Timeout, TimeoutError):
            return False
        finally:
            os.close(fd)

    def _keep(self, slot, proc):
        """Keep one slot filled with a live worker until the supervisor stops."""
        backoff = 0.5
        while not self.stopping:
            if proc is None:
                proc = self._spawn(slot)
                ready = self._wait_ready(proc)
            else:
                ready = True
            status = proc.wait()
            if self.stopping:
                break
            if status == STARTUP_ERROR_STATUS and not ready:
                logger.error("worker %d (pid %d) cannot start; stopping", slot, proc.pid)
                self.status = STARTUP_ERROR_STATUS
                self._begin_stop(signal.SIGTERM)
                break
            logger.log(logging.INFO if status == 0 else logging.WARNING,
                       "worker %d (pid %d) exited with %s%s; starting a new one", slot, proc.pid,
                       _describe_status(status), " (recycled)" if status == 0 else "")
            proc = None
            if ready:
                backoff = 0.5
            else:
                gevent.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
        self._reap(slot)

    def _reap(self, slot):
        proc = self.workers.get(slot)
        if proc is None:
            return
        deadline = time.monotonic() + self.options.graceful_timeout + 5
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            logger.warning("worker %d (pid %d) outlived the graceful timeout; killing it",
                           slot, proc.pid)
            proc.kill()
            proc.wait()
        self.workers.pop(slot, None)

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum):
        self._signals += 1
        if self._signals == 1:
            logger.info("%s: stopping %d worker(s) (drain up to %.0f s); a second signal stops "
                        "them at once", signal.Signals(signum).name, len(self.workers),
                        self.options.graceful_timeout)
        self._begin_stop(signal.SIGTERM)

    def _begin_stop(self, signum):
        self.stopping = True
        for proc in list(self.workers.values()):
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except OSError:
                    pass
        self._stopped.set()


def _describe_status(status):
    if status is not None and status < 0:
        return f"signal {signal.Signals(-status).name}"
    return f"status {status}"


def supervise(options):
    return Supervisor(options).run()
