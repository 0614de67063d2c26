"""``greenqueue db ...``: the PostgreSQL backend's schema, ahead of a deploy.

``migrate`` creates or upgrades the tables of a ``postgresql://`` backend; a runtime does the
same at start when the schema is absent, so running it is optional, but a deploy that
migrates first keeps the DDL (and its locks) out of the app's start.
"""
import click

from .errors import ConfigError


@click.group("db")
def db_group():
    """Manage the schema of a PostgreSQL backend."""


@db_group.command("migrate")
@click.option("--backend", envvar="GREENQUEUE_BACKEND", show_envvar=True, required=True,
              metavar="URL", help="postgresql://user@host/db (add ?schema=NAME to choose one).")
def migrate_command(backend):
    """Create the task tables, or bring them to this version's schema. Safe to run again,
    and from many hosts at once (an advisory lock makes them take turns)."""
    if not backend.lower().startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--backend must be a postgresql:// URL (Redis needs no schema)")
    try:
        from .log import check_backend
        check_backend(backend)
        from .log import pg_schema, postgres
        conninfo, schema, where = postgres.parse_url(backend)
        conn = postgres.connect(conninfo, where)
        try:
            before, after = pg_schema.migrate(conn, schema)
        finally:
            conn.close()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if before == after:
        click.echo(f"schema {schema!r} on {where} is up to date (version {after})")
    else:
        click.echo(f"migrated schema {schema!r} on {where} from version {before} to {after}")
