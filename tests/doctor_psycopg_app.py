"""An app that loads psycopg 3, for ``greenqueue doctor``'s driver check."""
import psycopg  # noqa: F401


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"db"]
