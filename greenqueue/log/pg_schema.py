"""The PostgreSQL backend's tables and their migrations (``greenqueue db migrate``).

One table of tasks, one of applied schema versions, one of unique keys, one of live processes'
figures and one of small shared records, in a schema of their own choosing
(``?schema=`` in the URL, default ``public``). Migrations are numbered, append-only and run
under an advisory lock, so that many processes starting at once migrate exactly once.

``greenqueue_tasks`` holds every task the cluster knows, one row each:
``state`` 0 pending (ready or delayed by ``due_at``), 1 claimed (``owner`` until
``lease_until``, server clock), 2 dead (with ``error``); ``envelope`` is Envelope.pack();
``crashed`` marks a task whose lease ran out, its attempt counted in the envelope. Ready rows
are taken in ``(priority DESC, due_at)`` order, where ``due_at`` is the enqueue time of a
task without delay, so equal priorities run first in, first out.
"""
import re

from ..errors import ConfigError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

MIGRATIONS = [
    # 1: the tasks table, the claim index (state, priority, due time), the due-time index
    #    the idle fetcher uses to learn when the next delayed task comes due
    """
    CREATE TABLE {schema}.greenqueue_tasks (
        id          text PRIMARY KEY,
        state       smallint NOT NULL,
        priority    integer NOT NULL,
        due_at      double precision NOT NULL,
        owner       text,
        lease_until double precision,
        crashed     boolean NOT NULL DEFAULT false,
        envelope    bytea NOT NULL,
        error       jsonb
    );
    CREATE INDEX greenqueue_tasks_claim ON {schema}.greenqueue_tasks
        (state, priority DESC, due_at);
    CREATE INDEX greenqueue_tasks_due ON {schema}.greenqueue_tasks (state, due_at);
    """,
    # 2: small named JSON records shared by the cluster (the periodic scheduler's state)
    """
    CREATE TABLE {schema}.greenqueue_state (
        name  text PRIMARY KEY,
        value text NOT NULL
    );
    """,
    # 3: cluster-wide unique keys (held while their task is pending, released with it) and
    #    each live process's published figures (``greenqueue stats`` for the whole cluster)
    """
    CREATE TABLE {schema}.greenqueue_unique (
        key        text PRIMARY KEY,
        task_id    text NOT NULL,
        expires_at double precision
    );
    CREATE INDEX greenqueue_unique_task ON {schema}.greenqueue_unique (task_id);
    CREATE TABLE {schema}.greenqueue_processes (
        owner      text PRIMARY KEY,
        seen_at    double precision NOT NULL,
        figures    jsonb NOT NULL
    );
    """,
]
VERSION = len(MIGRATIONS)


def check_name(schema):
    if not NAME.match(schema):
        raise ConfigError(f"schema {schema!r} must be a plain SQL identifier ([A-Za-z_]\\w*)")
    return schema


def current_version(conn, schema):
    """The applied schema version, 0 if greenqueue never migrated this schema."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".greenqueue_schema']).fetchone()
    if not row[0]:
        return 0
    row = conn.execute(f'SELECT max(version) FROM "{schema}".greenqueue_schema').fetchone()
    return row[0] or 0


def migrate(conn, schema):
    """Bring ``schema`` to the latest version; return (version before, version after).

    ``conn`` is an autocommit psycopg connection. The advisory lock is a session lock taken
    before the migration's transaction begins: a transaction that started before the lock was
    granted may look at a stale catalog and miss tables another process just created."""
    check_name(schema)
    lock = f"greenqueue:{schema}"
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [lock])
    try:
        with conn.transaction():
            before = current_version(conn, schema)
            if before > VERSION:
                raise ConfigError(f"schema {schema!r} is at version {before}, newer than this "
                                  f"greenqueue knows ({VERSION}): upgrade greenqueue")
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".greenqueue_schema ('
                         'version integer PRIMARY KEY, '
                         'migrated_at timestamptz NOT NULL DEFAULT now())')
            for version in range(before + 1, VERSION + 1):
                conn.execute(MIGRATIONS[version - 1].format(schema=f'"{schema}"'))
                conn.execute(f'INSERT INTO "{schema}".greenqueue_schema (version) VALUES (%s)',
                             [version])
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [lock])
    return before, VERSION
