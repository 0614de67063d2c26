"""``greenqueue db migrate`` through click's runner (parsing) on the real PostgreSQL."""
from click.testing import CliRunner

from greenqueue.cli_db import db_group
from tests import backends


def test_migrate_creates_the_schema_once_then_reports_it_up_to_date():
    url = backends.postgres_url()
    try:
        runner = CliRunner()
        first = runner.invoke(db_group, ["migrate", "--backend", url])
        assert first.exit_code == 0, first.output
        assert "from version 0 to 3" in first.output
        again = runner.invoke(db_group, ["migrate"], env={"GREENQUEUE_BACKEND": url})
        assert again.exit_code == 0 and "up to date (version 3)" in again.output
        import psycopg
        base, schema = url.split("?schema=")
        with psycopg.connect(base) as conn:
            versions = conn.execute(f'SELECT version FROM "{schema}".greenqueue_schema').fetchall()
        assert sorted(versions) == [(1,), (2,), (3,)]
    finally:
        backends.drop(url)


def test_migrate_refuses_other_urls_and_names_an_unreachable_server():
    runner = CliRunner()
    result = runner.invoke(db_group, ["migrate", "--backend", "redis://127.0.0.1:6379/0"])
    assert result.exit_code == 2 and "postgresql://" in result.output
    result = runner.invoke(db_group, ["migrate", "--backend", "postgresql://127.0.0.1:1/test"])
    assert result.exit_code == 1 and "cannot reach PostgreSQL" in result.output


def test_processes_starting_at_once_migrate_once():
    import gevent

    from greenqueue.log import pg_schema, postgres
    url = backends.postgres_url()
    try:
        conninfo, schema, where = postgres.parse_url(url)
        conns = [postgres.connect(conninfo, where) for _ in range(4)]
        jobs = [gevent.spawn(pg_schema.migrate, conn, schema) for conn in conns]
        gevent.joinall(jobs, raise_error=True)
        v = pg_schema.VERSION
        assert sorted(job.value for job in jobs) == [(0, v)] + [(v, v)] * 3
        for conn in conns:
            conn.close()
    finally:
        backends.drop(url)


def test_a_start_without_rights_to_create_the_schema_is_a_config_error():
    import psycopg
    import pytest

    import greenqueue
    url = backends.postgres_url()
    base, schema = url.split("?schema=")
    if "://postgres@" not in base:
        pytest.skip("needs the default superuser URL to make a role without rights")
    role = f"gq_noright_{schema[-8:]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        limited = base.replace("://postgres@", f"://{role}@", 1) + f"?schema={schema}"
        with pytest.raises(greenqueue.ConfigError, match="cannot create or migrate"):
            greenqueue.Runtime(backend=limited).start()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
        backends.drop(url)
