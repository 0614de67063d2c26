"""``greenqueue log ...``: look inside a data directory's write-ahead log."""
import json
import time

import click

from .log.inspect import summarize


@click.group("log")
def log_group():
    """Inspect the write-ahead log of a data directory."""


@log_group.command("inspect")
@click.argument("path", type=click.Path(exists=True), default="greenqueue-data")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--secret", envvar="GREENQUEUE_SECRET", default=None,
              help="Key of a signed log (records that fail it are counted as refused).")
def inspect_command(path, as_json, secret):
    """Show segment headers, record counts by kind, pending/delayed/dead tasks and damage.

    PATH is a data directory (default ./greenqueue-data) or one segment file. Reading takes no
    lock, so it is safe while processes run; their newest record may show as a torn tail.
    """
    report = summarize(path, secret)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"log {report['path']}: {len(report['segments'])} segment(s), "
               f"{report['bytes']:,} bytes")
    for seg in report["segments"]:
        if "error" in seg:
            click.echo(f"  {seg['path']}: cannot read: {seg['error']}")
            continue
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seg["created_at"] or 0))
        counts = ", ".join(f"{n} {kind}" for kind, n in seg["records"].items())
        click.echo(f"  {seg['path']}  v{seg['version']}  gen {seg['generation']}  "
                   f"{'signed  ' if seg['signed'] else ''}created {created}  "
                   f"{seg['bytes']:,} bytes: {counts}")
        for damage in seg["damage"]:
            click.echo(f"    {damage['kind']}: {damage['bytes']} bytes at offset {damage['offset']}")
        if seg["refused"]:
            click.echo(f"    {seg['refused']} record(s) failed their signature")
    click.echo(f"tasks: {report['pending']} pending, {report['delayed']} delayed, "
               f"{report['dead']} dead, {report['in_flight_at_crash']} in flight at a crash")
    if report["corrupt"] or report["refused"]:
        click.echo(f"damage: {report['corrupt']} corrupt stretch(es), "
                   f"{report['refused']} refused record(s)")
