"""The ``greenqueue`` command line (click). ``bin/greenqueue`` patches gevent, then calls main."""
import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="greenqueue")
def cli():
    """greenqueue: durable background tasks inside your gevent WSGI process."""


def main():
    cli(prog_name="greenqueue")
