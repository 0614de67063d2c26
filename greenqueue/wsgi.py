"""The request-id WSGI middleware: one id per request, in the response and in every log line.

Duties:
- take ``X-Request-Id`` from the request when it is sane (printable, at most 200 characters),
  else make one (32 hex characters);
- return it in the ``X-Request-Id`` response header and put it in
  ``environ["greenqueue.request_id"]``;
- make it the log context (:class:`greenqueue.log_context`) while the app runs *and* while the
  server iterates the response, so that the app's log lines and every task enqueued during the
  request log with the same id (through :class:`greenqueue.RequestIdFilter`).

The context is undone when the server closes the response, because a keep-alive connection
serves its next request in the same greenlet.

Hook for ``enqueue(..., after="response")`` (greenqueue/after.py): ``begin()`` as the request
starts, the status the app answers with, ``iterate()`` around the body and ``end()`` when the
response is closed, before the log context ends so the held tasks carry the request id.
"""
import uuid

from . import after as after_response
from .context import log_context

HEADER = "X-Request-Id"
ENVIRON_KEY = "greenqueue.request_id"
MAX_LENGTH = 200


def sane_request_id(value):
    """The client's id if it is safe to echo and to log, else None."""
    if not value or len(value) > MAX_LENGTH:
        return None
    if not all(33 <= ord(ch) < 127 for ch in value):
        return None
    return value


class RequestIdMiddleware:
    """Wrap a WSGI app: ``app = RequestIdMiddleware(app)``. ``greenqueue run`` does it for you."""

    def __init__(self, app, header=HEADER):
        self.app = app
        self.header = header
        self._environ_key = "HTTP_" + header.upper().replace("-", "_")

    def __call__(self, environ, start_response):
        request_id = sane_request_id(environ.get(self._environ_key)) or uuid.uuid4().hex
        environ[ENVIRON_KEY] = request_id
        header = self.header
        lowered = header.lower()

        def start_with_id(status, headers, exc_info=None):
            hold.status = status
            if not any(name.lower() == lowered for name, _ in headers):
                headers = list(headers) + [(header, request_id)]
            return start_response(status, headers, exc_info)

        context = log_context(request_id=request_id)
        hold = after_response.begin()
        try:
            result = self.app(environ, start_with_id)
        except BaseException:
            after_response.end(hold, failed=True)
            context.__exit__(None, None, None)
            raise
        return _ClosingIterable(result, context, hold)


class _ClosingIterable:
    """The app's response, iterated as is; closing it also ends the request's log context."""

    __slots__ = ("result", "context", "hold")

    def __init__(self, result, context, hold=None):
        self.result = result
        self.context = context
        self.hold = hold

    def __iter__(self):
        return after_response.iterate(self.result, self.hold)

    def close(self):
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            try:
                after_response.end(self.hold)
            finally:
                self.context.__exit__(None, None, None)
