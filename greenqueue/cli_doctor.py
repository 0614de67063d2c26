"""``greenqueue doctor MODULE:ATTR``: the checks of greenqueue/doctor.py, printed with fixes."""
import json
import sys

import click

MARKS = {"ok": "ok     ", "warning": "WARNING", "problem": "PROBLEM"}


@click.command("doctor")
@click.argument("target", metavar="MODULE:ATTR")
@click.option("--data-dir", envvar="GREENQUEUE_DATA_DIR", show_envvar=True,
              default="greenqueue-data", show_default=True, type=click.Path(file_okay=False),
              help="The data directory `greenqueue run` would use.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of findings.")
def doctor_command(target, data_dir, as_json):
    """Report what will hurt MODULE:ATTR under gevent, each with the fix.

    Imports the app the way `greenqueue run` would (and once more on its own, to see how it
    patches): monkey-patching missing or after ssl/threading, database and RPC drivers that
    block the hub, a data directory on a network file system or without room, a clock far
    off. Exit status 1 when something will hurt.
    """
    from .doctor import as_dicts, examine
    findings = examine(target, data_dir)
    if as_json:
        click.echo(json.dumps(as_dicts(findings)))
    else:
        for f in findings:
            click.echo(f"{MARKS[f.level]}  {f.check}: {f.message}")
            if f.fix and f.level != "ok":
                click.echo(f"         fix: {f.fix}")
        problems = sum(f.level == "problem" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        click.echo(f"{problems} problem(s), {warnings} warning(s)")
    sys.exit(1 if any(f.level == "problem" for f in findings) else 0)
