"""An app that patches too late: ``ssl`` and ``threading`` come before ``patch_all()``, and it
imports psycopg 3 before patching too. For ``greenqueue doctor``."""
import ssl  # noqa: F401
import threading  # noqa: F401

from gevent import monkey

monkey.patch_all(time=False)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"late"]
