"""``greenqueue dead ...``: list, show, retry and purge the dead set of a data directory, or of
a shared backend's whole cluster (``--backend URL``: read and changed on the server directly).

Each command asks the live processes of ``--data-dir`` through their control sockets (each
process owns its own segments and dead set; with a shared Redis or PostgreSQL log they all
see the same one, so answers are merged by task id). With no live process, it works on the
log files directly, through greenqueue/deadset.py's :class:`OfflineDeadSet`, which locks them
the way a starting process would. Live processes that do not answer are an error, never a
reason to touch their files.
"""
import datetime as _dt
import json
import os
import sys

import click

from .control import control_sockets, query, query_all

CHUNK = 500             # ids per control request: a few ms of hub time in the process
CHANGE_TIMEOUT = 30.0   # seconds a busy process may take to answer one chunk


def _data_dir_option(fn):
    return click.option("--data-dir", envvar="GREENQUEUE_DATA_DIR", show_envvar=True,
                        default="greenqueue-data", show_default=True,
                        type=click.Path(file_okay=False),
                        help="Directory of the task log and the control sockets.")(fn)


def _secret_option(fn):
    fn = click.option("--secret", envvar="GREENQUEUE_SECRET", default=None,
                      help="Key of a signed log (used only when no process is running).")(fn)
    return click.option(
        "--backend", envvar="GREENQUEUE_BACKEND", show_envvar=True, default=None,
        callback=_check_shared_backend, metavar="URL",
        help="A redis:// or postgresql:// URL: the dead set of every host sharing it, read "
             "and changed on the server (no process needs to run).")(fn)


def _check_shared_backend(ctx, param, value):
    from .cli import _check_shared_backend as check
    return check(ctx, param, value)


@click.group("dead")
def dead_group():
    """See, retry and purge tasks that used up their retries (the dead set)."""


# -- where the dead set lives -----------------------------------------------------------------

class Live:
    """The dead sets of the processes serving a data directory, through their sockets."""

    def __init__(self, data_dir, answers):
        self.sockets = dict(control_sockets(data_dir))
        self.pids = [a["pid"] for a in answers]

    def list(self, task=None):
        merged = {}
        for answer in self._ask_all("dead_list", task=task):
            for item in answer.get("dead", []):
                merged.setdefault(item["id"], dict(item, pid=answer["pid"]))
        return sorted(merged.values(), key=lambda d: d.get("failed_at") or 0)

    def show(self, task_id):
        for answer in self._ask_all("dead_show", id=task_id):
            if answer.get("task"):
                return dict(answer["task"], pid=answer["pid"])
        return None

    def change(self, cmd, ids_by_pid, advance):
        """Send ``ids_by_pid`` in chunks; ``advance(n)`` after each; the ids changed."""
        done = set()
        for pid, ids in ids_by_pid.items():
            for start in range(0, len(ids), CHUNK):
                chunk = [i for i in ids[start:start + CHUNK] if i not in done]
                if chunk:
                    answer = self._ask(pid, cmd, ids=chunk)
                    done.update(answer.get("retried" if cmd == "dead_retry" else "purged", []))
                advance(len(ids[start:start + CHUNK]))
        return done

    def _ask(self, pid, cmd, **args):
        try:
            answer = query(self.sockets[pid], cmd, timeout=CHANGE_TIMEOUT, **args)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"process {pid} did not answer: {exc}") from None
        return _checked(dict(answer, pid=pid))

    def _ask_all(self, cmd, **args):
        return [self._ask(pid, cmd, **args) for pid in self.pids]


def _checked(answer):
    if "error" in answer:
        raise click.ClickException(f"process {answer['pid']}: {answer['error']}")
    return answer


def _open(data_dir, secret, backend=None):
    """The server's dead set with a shared ``backend``; a Live view when processes serve
    ``data_dir``; else an OfflineDeadSet on its files."""
    if backend:
        from .deadset import SharedDeadSet
        from .errors import GreenqueueError
        target = SharedDeadSet(backend)
        try:
            target.open().close()  # unreachable, malformed: say so once, up front
        except GreenqueueError as exc:
            raise click.ClickException(str(exc)) from None
        return target
    data_dir = os.path.abspath(data_dir)
    live, _stale, unresponsive = query_all(data_dir, cmd="stats")
    if unresponsive:
        raise click.ClickException(
            f"process(es) {', '.join(map(str, unresponsive))} serve {data_dir} but did not "
            f"answer; try again (their log files stay theirs meanwhile)")
    if live:
        return Live(data_dir, live)
    if not os.path.isdir(data_dir):
        raise click.ClickException(f"no data directory at {data_dir}")
    from .deadset import OfflineDeadSet
    return OfflineDeadSet(data_dir, secret)


# -- reading ----------------------------------------------------------------------------------

def _when(epoch):
    if not epoch:
        return "-"
    return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text, width):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


@dead_group.command("list")
@_data_dir_option
@click.option("--task", "task", metavar="NAME", default=None, help="Only tasks of this name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_secret_option
def list_command(data_dir, task, as_json, secret, backend):
    """List dead tasks, oldest failure first: id, task, attempts, last failure, error."""
    dead = _open(data_dir, secret, backend).list(task)
    if as_json:
        click.echo(json.dumps(dead, default=str))
        return
    if not dead:
        click.echo("no dead tasks" + (f" of {task}" if task else ""))
        return
    rows = [("ID", "TASK", "ATTEMPTS", "LAST FAILURE", "ERROR")]
    for d in dead:
        error = f"{d['error']}: {d['message']}" if d.get("message") else (d["error"] or "")
        rows.append((d["id"], d["task"], str(d["attempts"]), _when(d["failed_at"]),
                     _one_line(error, 60)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join([c.ljust(w) for c, w in zip(r[:4], widths)] + [r[4]]))
    click.echo(f"{len(dead)} dead task(s)")


@dead_group.command("show")
@click.argument("task_id", metavar="ID")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@_secret_option
def show_command(task_id, data_dir, as_json, secret, backend):
    """Show one dead task: arguments, attempts, first and last failure, error and traceback."""
    found = _open(data_dir, secret, backend).show(task_id)
    if found is None:
        raise click.ClickException(f"no dead task with id {task_id}")
    if as_json:
        click.echo(json.dumps(found, default=str))
        return
    if found.get("args") is None:
        arguments = f"(cannot decode here: {found.get('decode_error')})"
    else:
        arguments = ", ".join(found["args"] + [f"{k}={v}" for k, v in found["kwargs"].items()])
    first = _when(found.get("first_failed_at")) if found.get("first_failed_at") \
        else "not recorded (earlier attempts failed before a restart)"
    for label, value in (("id", found["id"]), ("task", found["task"]),
                         ("arguments", f"({arguments})"), ("attempts", found["attempts"]),
                         ("enqueued", _when(found.get("enqueued_at"))),
                         ("first failure", first),
                         ("last failure", _when(found.get("failed_at"))),
                         ("error", f"{found.get('error')}: {found.get('message')}")):
        click.echo(f"{label + ':':<15}{value}")
    if found.get("pid"):
        click.echo(f"{'process:':<15}{found['pid']}")
    click.echo("traceback:")
    click.echo((found.get("traceback") or "(none)").rstrip())


# -- changing ---------------------------------------------------------------------------------

def _change_options(fn):
    fn = click.argument("ids", metavar="[ID]...", nargs=-1)(fn)
    fn = click.option("--all", "all_", is_flag=True, help="Every dead task (of --task NAME).")(fn)
    fn = click.option("--task", "task", metavar="NAME", default=None,
                      help="With --all: only tasks of this name.")(fn)
    fn = click.option("-y", "--yes", is_flag=True,
                      help="Do not ask for confirmation (asked only on a terminal).")(fn)
    fn = _data_dir_option(fn)
    return _secret_option(fn)


def _change(verb, cmd, ids, all_, task, yes, data_dir, secret, backend):
    if bool(ids) == bool(all_):
        raise click.UsageError(f"give the ids of the tasks to {verb}, or --all")
    if task and not all_:
        raise click.UsageError("--task goes with --all")
    target = _open(data_dir, secret, backend)
    offline = not isinstance(target, Live)
    if all_:
        listed = target.list(task)
        if not listed:
            click.echo("no dead tasks" + (f" of {task}" if task else ""))
            return
        what = f"{len(listed)} dead task(s)" + (f" of {task}" if task else "")
        if not yes and sys.stdin.isatty():
            click.confirm(f"{verb.capitalize()} {what}?", abort=True)
        if offline:
            ids_by_pid = {None: [d["id"] for d in listed]}
        else:
            ids_by_pid = {}
            for d in listed:
                ids_by_pid.setdefault(d["pid"], []).append(d["id"])
    else:
        listed = None
        ids_by_pid = {pid: list(ids) for pid in (
            [None] if offline else target.pids)}
    total = sum(len(v) for v in ids_by_pid.values())
    label = f"{verb[:-1] if verb.endswith('e') else verb}ing {total} task(s)"
    with click.progressbar(length=total, label=label, file=sys.stderr,
                           show_pos=True) as bar:
        if offline:
            with target.owned():
                done = set(_offline_change(target, cmd, ids_by_pid[None], bar.update))
        else:
            done = target.change(cmd, ids_by_pid, bar.update)
    past = "retried" if cmd == "dead_retry" else "purged"
    click.echo(f"{past} {len(done)} dead task(s)" + (
        f"; they run when a process next starts on {target.data_dir}"
        if offline and cmd == "dead_retry" and done and not getattr(target, "shared", False)
        else ""))
    missing = [i for i in ids if i not in done]
    if missing:
        raise click.ClickException(f"no dead task with id {', '.join(missing)}")


def _offline_change(target, cmd, ids, advance):
    apply = target.retry if cmd == "dead_retry" else target.purge
    for start in range(0, len(ids), CHUNK):
        yield from apply(ids[start:start + CHUNK])
        advance(len(ids[start:start + CHUNK]))


@dead_group.command("retry")
@_change_options
def retry_command(ids, all_, task, yes, data_dir, secret, backend):
    """Run dead tasks again with a fresh retry budget: ID... or --all [--task NAME]."""
    _change("retry", "dead_retry", ids, all_, task, yes, data_dir, secret, backend)


@dead_group.command("purge")
@_change_options
def purge_command(ids, all_, task, yes, data_dir, secret, backend):
    """Forget dead tasks for good: ID... or --all [--task NAME]."""
    _change("purge", "dead_purge", ids, all_, task, yes, data_dir, secret, backend)
