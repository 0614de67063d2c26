"""The real Redis and PostgreSQL of this machine, one private namespace per test.

A test that needs a server it cannot reach fails when ``CI`` is set (the CI script starts
both servers, so a missing one is a broken build) and is skipped elsewhere, as dramatiq's
conftest does. Each test gets its own Redis key prefix or PostgreSQL schema, dropped after it.
"""
import os
import socket
import uuid

import pytest

REDIS = os.environ.get("GREENQUEUE_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("GREENQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(why):
    if CI:
        pytest.fail(f"{why} (CI is set: the servers must be up)")
    pytest.skip(why)


def _reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _url(package, port, base, option):
    """``base`` with a fresh namespace option, once the package and the server are there."""
    try:
        __import__(package)
    except ImportError:
        unavailable(f"{package} is not installed (pip install -e '.[test]')")
    if not _reachable("127.0.0.1", port):
        unavailable(f"no server at 127.0.0.1:{port} for {package}")
    return f"{base}?{option}{uuid.uuid4().hex[:12]}"


def redis_url():
    """A URL with a fresh key prefix; ``drop`` deletes its keys afterwards."""
    return _url("redis", 6379, REDIS, "prefix=gqtest-")


def postgres_url():
    """A URL with a fresh schema name; ``drop`` removes the schema afterwards."""
    return _url("psycopg", 5432, POSTGRES, "schema=gqtest_")


def shared_url(kind):
    return redis_url() if kind == "redis" else postgres_url()


def drop(url):
    """Remove everything a test left under its prefix or schema."""
    if url.startswith("redis"):
        import redis
        prefix = url.rsplit("prefix=", 1)[1]
        client = redis.Redis.from_url(url.split("?", 1)[0])
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        import psycopg
        base, schema = url.split("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
