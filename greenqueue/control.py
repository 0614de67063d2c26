"""The control socket: each running process answers stats and dead-set commands on a unix socket.

Duties:
- :class:`ControlServer` listens on ``DATA_DIR/control-PID.sock`` (mode 0600: only the owner
  may ask) in a greenlet of the running process, and removes the file when it stops;
- :func:`query_all` is the client side of ``greenqueue stats``: it asks every socket in a data
  directory, and reports and removes the stale ones that a killed process left behind (nobody
  listens: the connection is refused), never failing because of them.

Protocol: the client sends one JSON line (``{"cmd": "stats"}``), the server answers one JSON line
and closes. A line, not a framing layer: the answers are small and the queries rare. Commands:
``stats``; ``metrics`` (per-task-name figures: greenqueue/task_figures.py); ``dead_list``
(``task``), ``dead_show`` (``id``), ``dead_retry`` and ``dead_purge`` (``ids``, a list): see
greenqueue/deadset.py; ``delayed`` (``limit``): greenqueue/dashboard/data.py; ``cluster`` (the
whole cluster on a shared backend): greenqueue/cluster.py. All act on the process's running
runtime.
"""
import errno
import json
import logging
import os
import socket

PREFIX = "control-"
DEAD_COMMANDS = ("dead_list", "dead_show", "dead_retry", "dead_purge")
SUFFIX = ".sock"
logger = logging.getLogger(__name__)


def socket_path(data_dir, pid=None):
    return os.path.join(data_dir, f"{PREFIX}{os.getpid() if pid is None else pid}{SUFFIX}")


class ControlServer:
    """Serve ``provider()`` (a JSON-ready dict) to whoever connects. Hub only."""

    def __init__(self, data_dir, provider):
        self.path = socket_path(os.path.abspath(data_dir))
        self.provider = provider
        self._server = None

    def start(self):
        from gevent.server import StreamServer
        try:
            os.unlink(self.path)  # a previous process with our pid died without cleaning up
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # born 0600: no window in which others could connect
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_mask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._server = StreamServer(sock, self._handle)
        self._server.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _handle(self, sock, _address):
        try:
            sock.settimeout(5)
            request = json.loads(_read_line(sock) or b"{}")
            cmd = request.get("cmd", "stats")
            if cmd == "stats":
                answer = self.provider()
            elif cmd == "metrics":
                from .task_figures import answer as metrics_answer
                answer = metrics_answer(request)
            elif cmd == "delayed":
                from .dashboard.data import answer_delayed
                answer = answer_delayed(request)
            elif cmd == "cluster":
                from .cluster import answer as cluster_answer
                answer = cluster_answer(request)
            elif cmd in DEAD_COMMANDS:
                from .deadset import answer as dead_answer
                answer = dead_answer(request)
            else:
                answer = {"error": f"unknown command {request.get('cmd')!r}"}
        except Exception as exc:  # noqa: BLE001 - a bad query must not hurt the process
            logger.exception("control socket: query failed")
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            sock.sendall(json.dumps(answer, default=str).encode() + b"\n")
        except OSError:
            pass
        finally:
            sock.close()


def serve_stats(data_dir, provider):
    """Start a ControlServer; None (with a warning) if the socket cannot be made, since a
    process must keep serving its app and tasks even when ``greenqueue stats`` cannot see it
    (an over-long path: unix socket paths are limited to ~107 bytes)."""
    try:
        return ControlServer(data_dir, provider).start()
    except OSError as exc:
        logger.warning("no control socket in %s (greenqueue stats will not see pid %d): %s",
                       data_dir, os.getpid(), exc)
        return None


def _read_line(sock, limit=65536):
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def control_sockets(data_dir):
    """(pid, path) of every control socket file in ``data_dir``."""
    try:
        names = os.listdir(data_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in sorted(names):
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            pid = name[len(PREFIX):-len(SUFFIX)]
            if pid.isdigit():
                found.append((int(pid), os.path.join(data_dir, name)))
    return found


def query(path, cmd="stats", timeout=3.0, **args):
    """Ask one socket; raises OSError (refused, missing, timed out) or ValueError (bad answer).
    ``args`` go into the request next to ``cmd`` (JSON-ready values)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        line = _read_line(sock, limit=16 * 1024 * 1024)
    finally:
        sock.close()
    return json.loads(line)


def query_all(data_dir, timeout=3.0, clean=True, cmd="stats", **args):
    """Ask every process serving in ``data_dir`` (``cmd`` with ``args``; default: stats).

    Returns ``(live, stale, unresponsive)``: the answers (dicts with at least ``pid``), the pids
    whose socket nobody listens on any more (their files are removed when ``clean``), and the
    pids that did not answer in time (left alone: the process may just be busy).
    """
    live, stale, unresponsive = [], [], []
    for pid, path in control_sockets(data_dir):
        try:
            answer = query(path, cmd, timeout=timeout, **args)
        except (ConnectionRefusedError, FileNotFoundError):
            stale.append(pid)
            if clean:
                _unlink_quietly(path)
            continue
        except socket.timeout:
            unresponsive.append(pid)
            continue
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                stale.append(pid)
                if clean:
                    _unlink_quietly(path)
            else:
                unresponsive.append(pid)
            continue
        except ValueError:
            unresponsive.append(pid)
            continue
        answer.setdefault("pid", pid)
        live.append(answer)
    return live, stale, unresponsive


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
