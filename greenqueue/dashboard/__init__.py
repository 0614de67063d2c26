"""The web dashboard: a WSGI app, server-rendered, with nothing to build and no CDN.

``make_app(data_dir, token=None)`` is the dashboard alone (mount it in Flask or Django);
``greenqueue run --dashboard /greenqueue`` mounts it in front of the app with
:class:`DashboardMiddleware`.

Duties of this module (the pages are in ``pages.py``, the figures in ``data.py``):
- safe by default: with no token it answers loopback clients only; with one (``token=`` or
  ``GREENQUEUE_DASHBOARD_TOKEN``) every client must present it, as ``?token=`` (which sets an
  HttpOnly, SameSite=Strict cookie and redirects to the same page without it) or as an
  ``Authorization: Bearer`` header;
- state changes only by POST from the dashboard's own forms: each carries the CSRF token that
  is also in a SameSite=Strict cookie (double submit), compared in constant time;
- routing: ``/`` overview, ``/tasks``, ``/delayed?page=N``, ``/dead``, ``/dead/ID``,
  ``/schedules``, ``POST /dead/retry`` and ``/dead/delete``, ``/static/...``.
"""
import hmac
import ipaddress
import os
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote, unquote, urlencode

from . import data, pages

__all__ = ["DashboardMiddleware", "make_app", "mount"]
STATIC = os.path.join(os.path.dirname(__file__), "static")
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def make_app(data_dir="greenqueue-data", token=None, prefix=""):
    """The dashboard as a WSGI app for the processes serving ``data_dir``. ``prefix`` is the
    path it is mounted at when the framework does not set SCRIPT_NAME."""
    token = token or os.environ.get("GREENQUEUE_DASHBOARD_TOKEN") or None
    return _Dashboard(os.path.abspath(data_dir), token, prefix)


def mount(app, runtime, prefix, data_dir, token=None):
    """``greenqueue run --dashboard PREFIX``: per-name figures on from the start, dashboard in
    front of ``app``."""
    from ..task_figures import enable
    enable(runtime)
    return DashboardMiddleware(app, prefix, data_dir, token)


class DashboardMiddleware:
    """Answer ``prefix`` and below with the dashboard; pass everything else to ``app``."""

    def __init__(self, app, prefix="/greenqueue", data_dir="greenqueue-data", token=None):
        self.app = app
        self.prefix = "/" + prefix.strip("/")
        self.dashboard = make_app(data_dir, token)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + self.prefix,
                           PATH_INFO=path[len(self.prefix):])
            return self.dashboard(environ, start_response)
        return self.app(environ, start_response)


class _Dashboard:
    def __init__(self, data_dir, token, prefix):
        self.data_dir = data_dir
        self.token = token
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ, start_response):
        from ..task_figures import enable
        from ..runtime import current_runtime
        if current_runtime() is not None:
            enable(current_runtime())  # per-name figures for the tasks page (idempotent)
        request = _Request(environ, self.prefix)
        refusal = self._refuse(request)
        if refusal is not None:
            return _send(start_response, *refusal)
        if self.token and request.query.get("token"):
            query = {k: v for k, v in request.query.items() if k != "token"}
            path = "/" + request.path.lstrip("/")  # never "//host": a redirect off the site
            location = request.base + path + (f"?{urlencode(query)}" if query else "")
            return _send(start_response, "303 See Other", b"", [
                ("Location", location),
                ("Set-Cookie", _cookie("gq_token", quote(self.token, safe=""), request.base))])
        try:
            status, body, headers = self._route(request)
        except Exception as exc:  # noqa: BLE001 - one broken page must not take the app down
            status, body, headers = "500 Internal Server Error", pages.error(
                request, f"{type(exc).__name__}: {exc}"), []
        if request.csrf_new:
            headers = headers + [("Set-Cookie", _cookie("gq_csrf", request.csrf, request.base))]
        return _send(start_response, status, body, headers)

    def _refuse(self, request):
        if self.token is None:
            if not _loopback(request.environ.get("REMOTE_ADDR", "")):
                return ("403 Forbidden", b"The greenqueue dashboard answers loopback clients "
                        b"only. Set --dashboard-token (or GREENQUEUE_DASHBOARD_TOKEN) to open "
                        b"it to others.\n", [("Content-Type", "text/plain")])
            return None
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        offered = [header[7:].strip() if header.lower().startswith("bearer ") else "",
                   unquote(request.cookies.get("gq_token", "")), request.query.get("token", "")]
        if any(o and hmac.compare_digest(o.encode(), self.token.encode()) for o in offered):
            return None
        return ("401 Unauthorized", b"The greenqueue dashboard needs its token: ?token=... or "
                b"an Authorization: Bearer header.\n",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])

    def _route(self, request):
        path, method = request.path or "/", request.method
        if path.startswith("/static/") and method == "GET":
            return _static(path[len("/static/"):])
        if method == "POST":
            return self._post(request, path)
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"", [("Allow", "GET, POST")]
        if path == "/":
            return _html(pages.overview(request, data.overview(self.data_dir)))
        if path == "/tasks":
            return _html(pages.tasks(request, data.tasks(self.data_dir)))
        if path == "/delayed":
            page = max(0, _int(request.query.get("page"), 0))
            rows, total = data.delayed(self.data_dir, page)
            return _html(pages.delayed(request, rows, total, page))
        if path == "/dead":
            return _html(pages.dead(request, data.dead(self.data_dir)))
        if path.startswith("/dead/"):
            found = data.show(self.data_dir, path[len("/dead/"):])
            if found is None:
                return "404 Not Found", pages.error(request, "no such dead task"), []
            return _html(pages.dead_task(request, found))
        if path == "/schedules":
            return _html(pages.schedules(request, data.overview(self.data_dir)))
        return "404 Not Found", pages.error(request, "no such page"), []

    def _post(self, request, path):
        form = request.form()
        sent = form.get("csrf", "")
        if not (request.cookies.get("gq_csrf") and sent and
                hmac.compare_digest(sent.encode(), request.cookies["gq_csrf"].encode())):
            return "403 Forbidden", pages.error(request, "missing or wrong CSRF token: reload "
                                                "the page and try again"), []
        actions = {"/dead/retry": "dead_retry", "/dead/delete": "dead_purge"}
        if path not in actions:
            return "404 Not Found", pages.error(request, "no such action"), []
        data.change(self.data_dir, actions[path], form.get("id", ""))
        return "303 See Other", b"", [("Location", request.base + "/dead")]


class _Request:
    def __init__(self, environ, prefix):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.base = (environ.get("SCRIPT_NAME", "") + prefix).rstrip("/")
        self.path = environ.get("PATH_INFO", "") or "/"
        if prefix and self.path.startswith(prefix):
            self.path = self.path[len(prefix):] or "/"
        self.query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        cookie = SimpleCookie()
        try:
            cookie.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no cookie
            pass
        self.cookies = {k: m.value for k, m in cookie.items()}
        self.csrf = self.cookies.get("gq_csrf") or secrets.token_urlsafe(24)
        self.csrf_new = "gq_csrf" not in self.cookies

    def form(self):
        try:
            length = min(int(self.environ.get("CONTENT_LENGTH") or 0), 65536)
        except ValueError:
            length = 0
        body = self.environ["wsgi.input"].read(length).decode("utf-8", "replace")
        return {k: v[-1] for k, v in parse_qs(body).items()}


def _loopback(address):
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address.startswith("unix:") or address == ""  # a unix socket is local


def _cookie(name, value, path):
    return f"{name}={value}; Path={path or '/'}; HttpOnly; SameSite=Strict"


def _int(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _html(body):
    return "200 OK", body, []


def _static(name):
    path = os.path.join(STATIC, os.path.basename(name))
    kind = TYPES.get(os.path.splitext(path)[1])
    if kind is None or not os.path.isfile(path):
        return "404 Not Found", b"not found\n", [("Content-Type", "text/plain")]
    with open(path, "rb") as f:
        return "200 OK", f.read(), [("Content-Type", kind), ("Cache-Control", "max-age=300")]


def _send(start_response, status, body, headers=()):
    headers = list(headers)
    names = {k.lower() for k, _ in headers}
    if "content-type" not in names:
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    if "cache-control" not in names:
        headers.append(("Cache-Control", "no-store"))
    headers += [("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "default-src 'self'"), ("X-Frame-Options", "DENY"),
                ("Referrer-Policy", "same-origin")]
    start_response(status, headers)
    return [body]
