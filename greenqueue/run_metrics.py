"""What ``greenqueue run --metrics`` / ``--metrics-bind`` add to a serving process or supervisor.

Duties:
- :func:`wrap_app` (a serving process): switch per-task-name counting on in its runtime, mount
  the Prometheus endpoint in front of the app with ``--metrics``, and, in a process that is not
  supervised, serve ``--metrics-bind`` itself;
- :func:`serve_for_supervisor`: with ``--workers N`` the supervisor serves ``--metrics-bind``
  (it outlives every worker and runs no task, so a scrape never waits behind one); the figures
  are summed over the workers' control sockets either way.

prometheus-client is an optional extra: asking for metrics without it is a start-up error that
names the pip command, not an ImportError in the middle of serving.
"""
import logging

from .boot import StartupError, bound_address

logger = logging.getLogger("greenqueue.server")


def _exporter():
    try:
        from .contrib import prometheus
    except ImportError as exc:
        raise StartupError(f"--metrics needs prometheus-client ({exc}): "
                           f"pip install 'greenqueue[prometheus]'") from None
    return prometheus


def wrap_app(app, runtime, options, data_dir, supervised):
    """The app to serve; starts the --metrics-bind server of an unsupervised process."""
    if not (options.metrics or options.metrics_bind):
        return app
    prometheus = _exporter()
    prometheus.enable(runtime)
    if options.metrics_bind and not supervised:
        serve_bind(options.metrics_bind, data_dir)
    if options.metrics:
        app = prometheus.MetricsMiddleware(app, data_dir, options.metrics_path)
    return app


def serve_bind(bind, data_dir):
    """Serve the metrics alone on ``bind`` (HOST:PORT) in a greenlet; returns the server."""
    server = _exporter().serve(bind, data_dir)
    logger.info("metrics served at http://%s/metrics", bound_address(server.socket))
    return server


def serve_for_supervisor(options):
    if options.metrics_bind:
        return serve_bind(options.metrics_bind, options.data_dir)
    if options.metrics:
        _exporter()  # refuse at start, once, rather than in every worker
    return None
