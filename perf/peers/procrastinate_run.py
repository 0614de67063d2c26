"""procrastinate: PostgreSQL queue, two `procrastinate worker` processes (one per core).

Configuration, per procrastinate's documentation: a ``PsycopgConnector`` (psycopg 3 with its
pool), the task an ``async def`` (procrastinate runs sync tasks in a thread each; async is its
native path), ``procrastinate worker --concurrency 10`` with LISTEN/NOTIFY on (its default), one
worker process per core, finished jobs kept (its default ``--delete-jobs never``). Its own
database, ``perf_procrastinate`` on 127.0.0.1:5432, made afresh at the start of the run with
procrastinate's schema (``app.schema_manager.apply_schema()``, what ``procrastinate schema
--apply`` does); emptied before each repetition (``TRUNCATE procrastinate_jobs ... CASCADE``),
and ``ANALYZE``d once the tasks are in, before the workers start (untimed): what autovacuum does
for a database in service.

Enqueue is ``noop.defer(i=i)``, the sync API, on the app opened synchronously: its psycopg
pool is sized to the concurrent callers (``max_size``), so the pool does not throttle them.

    python procrastinate_run.py TASKS REPEAT [CONCURRENCY]   (inside perf/.peers-venv, from
    perf/peers; the shared scenario runs it under ``python -m gevent.monkey``)
"""
import os
import sys

import procrastinate

from peer_common import args, concurrency, hit, report, run_broker_peer, spawn

SERVER = os.environ.get("PERF_PG_URL", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "perf_procrastinate"
DSN = f"{SERVER}/{DATABASE}"
PROCESSES, CONCURRENCY = 2, 10

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))


@app.task(queue="perf")
async def noop(i):
    hit()


def fresh_database():
    import psycopg
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")


def main():
    import psycopg

    import procrastinate_run as tasks   # the module name workers import, not __main__
    n, repeat = args()
    callers = concurrency()
    fresh_database()
    admin = psycopg.connect(DSN, autocommit=True)
    binary = os.path.join(os.path.dirname(sys.executable), "procrastinate")

    def enqueue(i):
        tasks.noop.defer(i=i)

    def reset():
        admin.execute("TRUNCATE procrastinate_jobs, procrastinate_events, "
                      "procrastinate_periodic_defers, procrastinate_workers RESTART IDENTITY "
                      "CASCADE")

    def workers():
        # the statistics autovacuum keeps on a database in service: without them the
        # planner scans the whole jobs table at every fetch (30 jobs/s at 50 000 jobs)
        admin.execute("ANALYZE procrastinate_jobs")
        return [spawn(f"procrastinate-{k}", [binary, "--app", "procrastinate_run.app",
                                             "--log-level", "warning", "worker", "--queues",
                                             "perf", "--concurrency", str(CONCURRENCY)])
                for k in range(PROCESSES)]

    pool = procrastinate.PsycopgConnector(conninfo=DSN, min_size=1, max_size=max(4, callers))
    with tasks.app.replace_connector(pool) as sender:
        sender.open()
        try:
            sender.schema_manager.apply_schema()
            runs = run_broker_peer(n, repeat, enqueue, workers, concurrency=callers,
                                   reset=reset)
        finally:
            sender.close()
            admin.close()
    report("procrastinate", procrastinate.__version__,
           f"{PROCESSES} x `procrastinate worker --concurrency {CONCURRENCY}` (LISTEN/NOTIFY), "
           f"async task, PsycopgConnector, database {DATABASE}, jobs kept (default)", runs)


if __name__ == "__main__":
    main()
