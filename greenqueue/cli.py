"""The ``greenqueue`` command line (click). ``bin/greenqueue`` patches gevent, then calls main.

Commands: ``run`` (serve a WSGI app with its tasks), ``stats`` (what running processes do).
Other command groups attach at the bottom with ``cli.add_command(...)``. The heavy modules
(server, supervisor) are imported inside the commands, after patching.
"""
import json
import sys
import time

import click

from . import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="greenqueue")
def cli():
    """greenqueue: durable background tasks inside your gevent WSGI process."""


def _option(*names, env, **kwargs):
    return click.option(*names, envvar=f"GREENQUEUE_{env}", show_envvar=True,
                        show_default=True, **kwargs)


def _check_backend(ctx, param, value):
    from .errors import ConfigError
    from .log import check_backend
    try:
        check_backend(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _data_dir_option(fn):
    return _option("--data-dir", env="DATA_DIR", default="greenqueue-data",
                   type=click.Path(file_okay=False),
                   help="Directory of the task log and the control sockets.")(fn)


@cli.command(context_settings=CONTEXT)
@click.argument("target", metavar="MODULE:ATTR")
@_option("-b", "--bind", env="BIND", default="127.0.0.1:8000",
         help="HOST:PORT (or unix:PATH) to listen on.")
@_data_dir_option
@_option("-w", "--workers", env="WORKERS", default=0, type=click.IntRange(min=0),
         help="Pre-fork N worker processes sharing the socket, under a supervisor that restarts "
              "any that dies. 0: one process serves and runs tasks.")
@_option("-c", "--concurrency", env="CONCURRENCY", default=100, type=click.IntRange(min=1),
         help="Task worker greenlets per process (tasks running at once).")
@_option("--fsync-interval", env="FSYNC_INTERVAL", default=0.5,
         type=click.FloatRange(min=0, min_open=True),
         help="Seconds between batched fsyncs of the log.")
@_option("--backpressure/--no-backpressure", env="BACKPRESSURE", default=False,
         help="Block enqueue while too many tasks are ready (PushTimeout after 2 s).")
@_option("--log-level", env="LOG_LEVEL", default="info",
         type=click.Choice(["debug", "info", "warning", "error", "critical"],
                           case_sensitive=False), help="Level of the log on stderr.")
@_option("--access-log/--no-access-log", env="ACCESS_LOG", default=True,
         help="Log one line per request (with its request id).")
@_option("--graceful-timeout", env="GRACEFUL_TIMEOUT", default=15.0,
         type=click.FloatRange(min=0),
         help="On SIGTERM/SIGINT, seconds for requests and running tasks to finish.")
@_option("--max-rss", env="MAX_RSS", default=None, type=click.FloatRange(min=1), metavar="MB",
         help="Recycle a worker whose RSS passes MB (minus up to 10 % jitter). "
              "Implies --workers 1 when --workers is 0.")
@_option("--max-tasks", env="MAX_TASKS", default=None, type=click.IntRange(min=1),
         metavar="N", help="Recycle a worker after N task attempts (minus up to 10 % jitter). "
                           "Implies --workers 1 when --workers is 0.")
@_option("--backend", env="BACKEND", default="disk", callback=_check_backend,
         help="Task log: disk (durable, in --data-dir), memory (lost on exit; for experiments), "
              "or a redis:// or postgresql:// URL shared by many processes and hosts.")
@_option("--metrics/--no-metrics", env="METRICS", default=False,
         help="Serve Prometheus metrics (summed over --workers) at --metrics-path, answered "
              "before the app. Needs prometheus-client.")
@_option("--metrics-path", env="METRICS_PATH", default="/metrics",
         help="Path of the metrics endpoint in the app's address space.")
@_option("--metrics-bind", env="METRICS_BIND", default=None, metavar="HOST:PORT",
         help="Also (or instead) serve the metrics alone on HOST:PORT.")
@_option("--max-blocking-ms", env="MAX_BLOCKING_MS", default=100.0, type=click.FloatRange(min=0),
         metavar="MS", help="Name (in the log, stats and metrics) any task that holds the gevent "
                            "hub longer than MS without yielding; 0 turns the check off.")
@_option("--dashboard", env="DASHBOARD", default=None, metavar="PATH",
         help="Mount the web dashboard at PATH (like /greenqueue), answered before the app.")
@_option("--dashboard-token", env="DASHBOARD_TOKEN", default=None,
         help="Token every dashboard client must present (?token= or a Bearer header). "
              "Without one the dashboard answers loopback clients only.")
def run(target, **settings):
    """Serve the WSGI app MODULE:ATTR (or MODULE:factory()) with gevent and run its tasks.

    The log in --data-dir is replayed before the first request is served. SIGTERM or SIGINT
    drain (requests, then tasks, up to --graceful-timeout) and exit 0; a second signal exits
    at once. Unfinished tasks stay in the log and run on the next start.
    """
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()  # launched without bin/greenqueue: patch before the app is imported
    from .server import ServeOptions, serve
    options = ServeOptions(target=target, **settings)
    if options.workers == 0 and (options.max_rss or options.max_tasks):
        options.workers = 1  # recycling needs someone to start the replacement
    if options.workers:
        from .supervisor import supervise
        sys.exit(supervise(options))
    sys.exit(serve(options))


@cli.command("_worker", hidden=True)
@click.argument("spec")
@click.option("--listen-fd", type=int, required=True)
@click.option("--ready-fd", type=int, required=True)
@click.option("--parent-pid", type=int, required=True)
def worker(spec, listen_fd, ready_fd, parent_pid):
    """A supervised worker (started by the supervisor, not by hand)."""
    from .server import ServeOptions, serve
    options = ServeOptions(**json.loads(spec))
    sys.exit(serve(options, listen_fd=listen_fd, ready_fd=ready_fd, parent_pid=parent_pid))


def _check_shared_backend(ctx, param, value):
    """A shared backend's URL, or None: ``disk`` and ``memory`` (say, GREENQUEUE_BACKEND set
    for ``run``) mean the processes of --data-dir alone."""
    if value in (None, "", "disk", "memory"):
        return None
    return _check_backend(ctx, param, value)


@cli.command(context_settings=CONTEXT)
@_data_dir_option
@_option("--backend", env="BACKEND", default=None, callback=_check_shared_backend,
         metavar="URL", help="A redis:// or postgresql:// URL: show every process of every host "
                             "sharing it, and the server's counts (read there directly).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (per refresh).")
@click.option("--watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=2.0,
              default=None, metavar="[SECONDS]",
              help="Refresh every SECONDS (default 2) until Ctrl-C, like top.")
def stats(data_dir, backend, as_json, watch):
    """Show what every greenqueue process serving from --data-dir is doing.

    Per process and in total: memory, CPU, queue and task counts, rates, log size, greenlets,
    open files, queue latency and wait percentiles. With no live process, the log files are
    read instead. Stale control sockets of dead processes are reported and removed.

    On a shared backend (--backend URL, or a local process running on one) every process of
    the cluster is shown, whichever host it runs on, with the server's own counts of ready,
    delayed, in-flight and dead tasks.
    """
    from .errors import GreenqueueError
    from .stats import collect, render
    try:
        while True:
            try:
                report = collect(data_dir, backend=backend)
            except GreenqueueError as exc:  # the backend is unreachable, say
                raise click.ClickException(str(exc)) from None
            if as_json:
                click.echo(json.dumps(report, default=str))
            else:
                if watch:
                    click.echo("\x1b[H\x1b[2J", nl=False)
                click.echo(render(report))
            if not watch:
                break
            time.sleep(watch)
    except KeyboardInterrupt:
        return
    if not report["processes"] and (report["log"] or {}).get("error", "").startswith("no data"):
        sys.exit(1)


# Further command groups are attached here.
from .cli_db import db_group  # noqa: E402
from .cli_dead import dead_group  # noqa: E402
from .cli_doctor import doctor_command  # noqa: E402
from .cli_log import log_group  # noqa: E402

for command in (log_group, dead_group, db_group, doctor_command):
    cli.add_command(command)


def main():
    cli(prog_name="greenqueue")
