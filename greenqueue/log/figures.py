"""The cluster's figures on a shared backend (``greenqueue stats``, metrics, dashboard).

Every live process publishes its figures under its ``owner`` name every few seconds
(greenqueue/cluster.py); readers skip and delete entries not seen for ``stale_after``
seconds (a killed process), and read the server's own queue depth next to them.
These calls stay out of the writers' way: no outbox flush, no ``_sending`` turn, no
retrying for ``retry_for`` (PostgreSQL: a connection of their own). A failed call
raises BackendUnavailable; the publisher tries again at its next round.

Mixed into SharedLog, which provides ``describe`` and ``connection_errors``; each server
provides ``_publish``, ``_unpublish``, ``_cluster`` and, with a connection of their own,
``_figures_close``.
"""
import json

from ..errors import BackendUnavailable


class ClusterFigures:
    _published = False

    def publish(self, figures):
        """Store this process's figures (a JSON-ready dict) with the server's time."""
        data = json.dumps(_finite(figures), default=str, allow_nan=False)
        self._figures_call("publish", self._publish, data)
        self._published = True

    def unpublish(self):
        """Remove this process's figures (at close); quiet if the server is away."""
        if self._published:
            self._published = False
            try:
                self._figures_call("unpublish", self._unpublish)
            except BackendUnavailable:
                pass  # readers drop the entry once it is stale
        self._figures_close()

    def cluster(self, stale_after=6.0):
        """The cluster as the server sees it: ``processes`` (the figures each live process
        published, with ``owner`` and ``seen`` seconds ago), the counts of ``ready``,
        ``delayed``, ``in_flight`` (claimed) and ``dead`` tasks, and ``oldest_ready_age``
        (seconds; None when unknown or nothing is ready)."""
        procs, counts = self._figures_call("read the cluster", self._cluster, float(stale_after))
        processes = []
        for owner, seen, figures in procs:
            if isinstance(figures, (str, bytes)):
                try:
                    figures = json.loads(figures)
                except ValueError:
                    continue
            if isinstance(figures, dict):
                processes.append(dict(figures, owner=owner, seen=max(0.0, seen)))
        processes.sort(key=lambda p: (str(p.get("host")), p.get("pid") or 0))
        return dict(counts, processes=processes, backend=self.describe())

    def _figures_call(self, what, fn, *args):
        """``fn(*args)``, tried again once on a fresh connection (an idle one may have gone)."""
        for last in (False, True):
            try:
                return fn(*args)
            except self.connection_errors as exc:
                self._figures_close()
                if last:
                    raise BackendUnavailable(
                        f"{what}: {self.describe()} is unreachable: {exc}") from exc

    def _figures_close(self):
        """Drop the connection of ``_publish``/``_cluster`` if they have one of their own."""

    def _publish(self, data):
        raise NotImplementedError

    def _unpublish(self):
        raise NotImplementedError

    def _cluster(self, stale_after):
        """([(owner, seconds since seen, figures JSON or dict)], {ready, delayed, in_flight,
        dead, oldest_ready_age}), after deleting the entries older than ``stale_after``."""
        raise NotImplementedError


def _finite(value):
    """``value`` with infinities and NaNs as None: JSON (and jsonb) have no such numbers."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
