"""The PostgreSQL backend: one table shared by every process that names the same database.

The layout and its migrations live in ``pg_schema.py``; a schema that is absent is created at
start (``greenqueue db migrate --backend URL`` does the same ahead of a deploy). Choose the
schema with ``?schema=name`` in the URL (default ``public``).

- enqueue is one statement: an upsert of a batch (see shared.py: group commit), with
  ``pg_notify`` in the same statement when a task is due within ``SOON`` seconds, so an idle
  fetcher (blocked in LISTEN on its own connection) wakes up and runs it, or learns its due
  time and sleeps until then;
- a claim is one statement: ``UPDATE ... WHERE id IN (SELECT ... ORDER BY priority DESC,
  due_at LIMIT n FOR UPDATE SKIP LOCKED) RETURNING``: many processes take disjoint batches
  without waiting on each other's row locks;
- leases that ran out are taken back (attempt counted, ``crashed`` set) at most every
  ``lease / 4`` seconds, under SKIP LOCKED as well;
- acknowledgements from the outbox (see shared.py): one DELETE for a run of removes.

Times are epoch seconds; leases use the database server's clock, so the hosts' clocks need not
agree. Every write is committed before the call returns: what PostgreSQL acknowledged, it keeps.
"""
import json
import os
import socket
import struct
import time
import urllib.parse
from secrets import token_hex

from ..errors import ConfigError
from . import DeadTask
from . import pg_schema
from .shared import SharedLog
from ..envelope import unpack

try:
    import psycopg
    from psycopg import conninfo as _conninfo
except ImportError as exc:
    raise ConfigError("the PostgreSQL backend needs psycopg 3: "
                      "pip install 'greenqueue[postgres]'") from exc

NOW = "extract(epoch from clock_timestamp())"
SOON = 1.0                 # a delayed task due sooner than this wakes idle fetchers too
_attempt = struct.Struct("<I")
ATTEMPT_AT = 20            # byte offset of ``attempt`` in a packed envelope (see envelope.py)


def parse_url(url):
    """(libpq conninfo without our own options, schema, where-for-messages)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    schema = pg_schema.check_name(query.pop("schema", ["public"])[-1])
    plain = urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True)))
    try:
        _conninfo.conninfo_to_dict(plain)
        port = parts.port
    except (psycopg.Error, ValueError) as exc:
        raise ConfigError(f"malformed PostgreSQL URL: {exc}") from exc
    where = f"{parts.hostname or 'localhost'}{f':{port}' if port else ''}{parts.path}"
    return plain, schema, where


def connect(conninfo, where):
    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        raise ConfigError(f"cannot reach PostgreSQL at {where}: {exc}".strip()) from exc


class PostgresLog(SharedLog):
    connection_errors = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url, lease=30.0, retry_for=1.0, **_ignored):
        super().__init__(url, lease, retry_for)
        self.conninfo, self.schema, self.where = parse_url(url)
        self.table = f'"{self.schema}".greenqueue_tasks'
        self.channel = f"greenqueue_{self.schema}"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{token_hex(4)}"
        self.conn = connect(self.conninfo, self.where)     # enqueue, acks, reads
        self.claim_conn = None                              # the fetcher's, made on first use
        self.listen_conn = None
        self.lead_conn = None                               # holds the leader's advisory lock
        try:
            if pg_schema.current_version(self.conn, self.schema) < pg_schema.VERSION:
                pg_schema.migrate(self.conn, self.schema)
        except psycopg.Error as exc:  # no rights to create it, say: a start-up error
            self.conn.close()
            raise ConfigError(f"cannot create or migrate the greenqueue tables in schema "
                              f"{self.schema!r} at {self.where}: {exc}") from exc
        self._reclaim_at = 0.0
        self.next_change = None
        t = self.table
        # arrays go in binary (%b): psycopg escapes bytea in text as a regex per value (50
        # greenlets enqueueing: 25k -> 37k tasks/s); claims come back in binary for the same
        self._sql_append = (
            f"WITH up AS (INSERT INTO {t} (id, state, priority, due_at, envelope) "
            f"SELECT id, 0, priority, due_at, envelope FROM unnest(%b::text[], %b::int[], "
            f"%b::float8[], %b::bytea[]) AS v(id, priority, due_at, envelope) "
            f"ON CONFLICT (id) DO UPDATE SET state = 0, "
            f"priority = EXCLUDED.priority, due_at = EXCLUDED.due_at, owner = NULL, "
            f"lease_until = NULL, crashed = false, envelope = EXCLUDED.envelope, error = NULL "
            f"RETURNING 1) SELECT pg_notify(%s, '') WHERE %s AND EXISTS (SELECT 1 FROM up)")
        u = self.unique_table = f'"{self.schema}".greenqueue_unique'
        # a task that is gone (done, purged, dead) releases its unique key in the same statement
        self._sql_remove = (f"WITH gone AS (DELETE FROM {t} WHERE id = ANY(%s)) "
                            f"DELETE FROM {u} WHERE task_id = ANY(%s)")
        self._sql_bury = (
            f"WITH buried AS (INSERT INTO {t} (id, state, priority, due_at, envelope, error) "
            f"VALUES (%s, 2, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET state = 2, "
            f"owner = NULL, lease_until = NULL, crashed = false, envelope = EXCLUDED.envelope, "
            f"error = EXCLUDED.error) DELETE FROM {u} WHERE task_id = %s")
        self._sql_holder = (
            f"SELECT u.task_id FROM {u} u JOIN {t} k ON k.id = u.task_id AND k.state < 2 "
            f"WHERE u.key = %s AND u.task_id <> %s AND (u.expires_at IS NULL "
            f"OR u.expires_at > {NOW})")
        self._sql_hold = (
            f"INSERT INTO {u} (key, task_id, expires_at) VALUES (%s, %s, {NOW} + %s) "
            f"ON CONFLICT (key) DO UPDATE SET task_id = EXCLUDED.task_id, "
            f"expires_at = EXCLUDED.expires_at")
        self._sql_claim = (
            f"UPDATE {t} SET state = 1, owner = %s, lease_until = {NOW} + %s "
            f"WHERE id IN (SELECT id FROM {t} WHERE state = 0 AND due_at <= {NOW} "
            f"ORDER BY priority DESC, due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"RETURNING envelope, crashed")
        self._start_helpers()

    def describe(self):
        return f"PostgreSQL at {self.where} (schema {self.schema!r})"

    # -- SharedLog's server half ---------------------------------------------------------------

    def _send(self, ops, envs):
        if not ops:
            return self._append(envs)
        with self.conn.transaction():  # in call order; a round trip per run of one kind
            self._apply(ops)
            if envs:
                self._append(envs)

    def _append(self, envs):
        latest = {env.id: env for env in envs}.values()  # one row may change once a statement
        soon = time.time() + SOON
        self.conn.execute(self._sql_append, (
            [e.id for e in latest], [e.priority for e in latest],
            [e.publish_at or e.enqueued_at for e in latest], [e.pack() for e in latest],
            self.channel, any(e.publish_at < soon for e in latest)))

    def _apply(self, ops):
        """Runs of removes become one DELETE; burials one upsert each, in call order."""
        removes = []
        for op in ops + [("end",)]:
            if op[0] == "remove":
                removes.append(op[1])
                continue
            if removes:
                self.conn.execute(self._sql_remove, [removes, removes])
                removes = []
            if op[0] == "bury":
                env, error = op[1], op[2]
                self.conn.execute(self._sql_bury, (env.id, env.priority, env.publish_at,
                                                   env.pack(), json.dumps(error), env.id))

    def _append_unique(self, env, key, unique_for):
        # the advisory lock makes the check and the store one step for this key; the check is
        # a statement of its own so that it sees what the lock's previous holder committed
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                              [f"greenqueue:{self.schema}:{key}"])
            row = self.conn.execute(self._sql_holder, [key, env.id]).fetchone()
            if row is not None:
                return row[0]
            self.conn.execute(self._sql_hold, [key, env.id, unique_for])
            self._append([env])
        return None

    def _claim(self, limit):
        conn = self.claim_conn
        if conn is None or conn.closed:
            conn = self.claim_conn = connect(self.conninfo, self.where)
        if time.monotonic() >= self._reclaim_at:
            self._reclaim(conn)
            self._reclaim_at = time.monotonic() + self.lease / 4
        rows = conn.execute(self._sql_claim, (self.owner, self.lease, limit),
                            binary=True).fetchall()  # bytea as is, not hex to decode
        if not rows:
            self.next_change = self._next_change(conn)
        return rows

    def _reclaim(self, conn):
        """Take back tasks whose lease ran out: count the attempt, mark them crashed."""
        with conn.transaction():
            rows = conn.execute(
                f"SELECT id, envelope FROM {self.table} WHERE state = 1 AND lease_until < {NOW} "
                f"LIMIT 1000 FOR UPDATE SKIP LOCKED").fetchall()
            if rows:
                ids, envs = [r[0] for r in rows], [_count_attempt(r[1]) for r in rows]
                conn.execute(
                    f"UPDATE {self.table} t SET state = 0, owner = NULL, lease_until = NULL, "
                    f"crashed = true, envelope = v.envelope FROM unnest(%s::text[], "
                    f"%s::bytea[]) AS v(id, envelope) WHERE t.id = v.id", (ids, envs))

    def _next_change(self, conn):
        """Seconds until the next delayed task is due or the next lease runs out. A lease
        that ran out already is taken back at the next claim (not ``lease / 4`` later), so
        that an idle fetcher never spins on a change that is overdue."""
        due, lease = conn.execute(
            f"SELECT (SELECT min(due_at) FROM {self.table} WHERE state = 0) - {NOW}, "
            f"(SELECT min(lease_until) FROM {self.table} WHERE state = 1) - {NOW}").fetchone()
        if lease is not None and lease <= 0:
            self._reclaim_at = 0.0
            lease = 0.0
        known = [t for t in (due, lease) if t is not None]
        return min(known) if known else None

    def _renew(self, ids):
        rows = self.conn.execute(
            f"UPDATE {self.table} SET lease_until = {NOW} + %s "
            f"WHERE id = ANY(%s) AND owner = %s AND state = 1 RETURNING id",
            (self.lease, ids, self.owner)).fetchall()
        kept = {r[0] for r in rows}
        return [task_id for task_id in ids if task_id not in kept]

    def wait(self, timeout):
        """Block in LISTEN (its own connection) until a NOTIFY or ``timeout``."""
        conn = self.listen_conn
        if conn is None or conn.closed:
            conn = self.listen_conn = connect(self.conninfo, self.where)
            conn.execute(f'LISTEN "{self.channel}"')
        try:
            for _ in conn.notifies(timeout=max(0.0, timeout), stop_after=1):
                break
        except TypeError:  # psycopg < 3.2: no timeout; wait for the socket, then read
            import gevent.select
            if not conn._notify_handlers:
                conn.add_notify_handler(lambda _: None)  # read notifications, keep none
            if gevent.select.select([conn.fileno()], [], [], timeout)[0]:
                conn.execute("SELECT 1")

    def reconnect(self):
        for name in ("claim_conn", "listen_conn", "lead_conn"):
            conn = getattr(self, name)
            if conn is not None and conn.broken:
                conn.close()
                setattr(self, name, None)
        if self.conn.broken or self.conn.closed:
            try:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2)
            except psycopg.Error:
                pass  # the next try raises the connection error and counts against retry_for

    def _close(self):
        for conn in (self.conn, self.claim_conn, self.listen_conn, self.lead_conn):
            if conn is not None:
                conn.close()

    # -- reading ----------------------------------------------------------------------------

    def pending(self):
        rows = self._read(self._select, "envelope", "state < 2")
        return [unpack(r[0]) for r in rows]

    def _lead(self):
        """A session advisory lock on a connection of its own: the server drops it the moment
        the leader's connection dies (process killed, host gone)."""
        conn = self.lead_conn
        if conn is not None and not conn.closed:
            conn.execute("SELECT 1")  # still connected means still holding
            return True
        conn = connect(self.conninfo, self.where)
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                           [f"greenqueue:{self.schema}:leader"]).fetchone()
        if row[0]:
            self.lead_conn = conn
            return True
        conn.close()
        return False

    def _resign(self):
        if self.lead_conn is not None:
            self.lead_conn.close()
            self.lead_conn = None

    def _load_state(self):
        row = self.conn.execute(f'SELECT value FROM "{self.schema}".greenqueue_state '
                                f"WHERE name = 'scheduler'").fetchone()
        return row[0] if row else None

    def _save_state(self, data):
        self.conn.execute(
            f'INSERT INTO "{self.schema}".greenqueue_state (name, value) VALUES '
            f"('scheduler', %s) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", [data])

    def _delayed(self, limit):
        (total,) = self.conn.execute(
            f"SELECT count(*) FROM {self.table} WHERE state = 0 AND due_at > {NOW}").fetchone()
        rows = self.conn.execute(
            f"SELECT envelope FROM {self.table} WHERE state = 0 AND due_at > {NOW} "
            f"ORDER BY due_at LIMIT %s", [limit]).fetchall()
        return total, [bytes(row[0]) for row in rows]

    def _holds(self, task_id):
        return self.conn.execute(f"SELECT 1 FROM {self.table} WHERE id = %s AND state < 2",
                                 [task_id]).fetchone() is not None

    # -- the cluster's figures (see SharedLog.publish): greenqueue_processes -----------------

    def _figures_conn(self):
        conn = getattr(self, "figures_conn", None)
        if conn is None or conn.closed:
            conn = self.figures_conn = connect(self.conninfo, self.where)
        return conn

    def _figures_close(self):
        conn = getattr(self, "figures_conn", None)
        if conn is not None:
            self.figures_conn = None
            conn.close()

    def _publish(self, data):
        self._figures_conn().execute(
            f'INSERT INTO "{self.schema}".greenqueue_processes (owner, seen_at, figures) '
            f"VALUES (%s, {NOW}, %s::jsonb) ON CONFLICT (owner) DO UPDATE SET "
            f"seen_at = EXCLUDED.seen_at, figures = EXCLUDED.figures", [self.owner, data])

    def _unpublish(self):
        self._figures_conn().execute(
            f'DELETE FROM "{self.schema}".greenqueue_processes WHERE owner = %s', [self.owner])

    def _cluster(self, stale_after):
        procs = f'"{self.schema}".greenqueue_processes'
        conn = self._figures_conn()
        rows = conn.execute(
            f"WITH gone AS (DELETE FROM {procs} WHERE seen_at < {NOW} - %s) "
            f"SELECT owner, ({NOW} - seen_at)::float8, figures FROM {procs} "
            f"WHERE seen_at >= {NOW} - %s", [stale_after, stale_after]).fetchall()
        ready, delayed, claimed, dead, oldest = conn.execute(
            f"SELECT count(*) FILTER (WHERE state = 0 AND due_at <= n), "
            f"count(*) FILTER (WHERE state = 0 AND due_at > n), "
            f"count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2), "
            f"(n - min(due_at) FILTER (WHERE state = 0 AND due_at <= n))::float8 "
            f"FROM (SELECT {NOW}::float8 AS n) AS clock LEFT JOIN {self.table} ON true "
            f"GROUP BY n").fetchone()
        return rows, {"ready": ready, "delayed": delayed, "in_flight": claimed, "dead": dead,
                      "oldest_ready_age": oldest}

    def dead(self):
        rows = self._read(self._select, "envelope, error", "state = 2")
        return [DeadTask(unpack(r[0]), r[1]) for r in rows]

    def _select(self, columns, where):
        return self.conn.execute(f"SELECT {columns} FROM {self.table} WHERE {where}").fetchall()

    def drop_all(self):
        """Delete every task of this schema (tests, and starting over)."""
        self.conn.execute(f"DELETE FROM {self.table}")
        self.conn.execute(f"DELETE FROM {self.unique_table}")


def _count_attempt(packed):
    """The packed envelope with ``attempt`` one higher: a crash cut that attempt short."""
    packed = bytes(packed)
    (attempt,) = _attempt.unpack_from(packed, ATTEMPT_AT)
    return packed[:ATTEMPT_AT] + _attempt.pack(attempt + 1) + packed[ATTEMPT_AT + 4:]
