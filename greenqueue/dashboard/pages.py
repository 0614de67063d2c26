"""The dashboard's pages, rendered on the server: readable without JavaScript.

Every value that comes from a task or a process passes through ``e()`` (html.escape, quotes
too) before it reaches the page: task arguments, names, error messages and tracebacks are
data, never markup. The only script is ``static/dashboard.js``, which re-fetches the page's
``data-refresh`` sections every few seconds.
"""
import time
from html import escape

from ..stats import ROWS, _cell, cluster_line

NAV = (("/", "Overview"), ("/tasks", "Tasks"), ("/delayed", "Delayed"), ("/dead", "Dead"),
       ("/schedules", "Schedules"))


def e(value):
    return escape("" if value is None else str(value), quote=True)


def _when(epoch):
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _seconds(s):
    if s is None:
        return "-"
    if s == float("inf"):
        return "> 300 s"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def layout(request, title, body, refresh=False):
    links = "".join(f'<a href="{e(request.base + path)}"'
                    f'{" class=current" if request.path == path else ""}>{e(name)}</a>'
                    for path, name in NAV)
    script = f'<script src="{e(request.base)}/static/dashboard.js" defer></script>' \
        if refresh else ""
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · greenqueue</title>'
            f'<link rel="stylesheet" href="{e(request.base)}/static/dashboard.css">{script}'
            f'</head><body><header><strong>greenqueue</strong><nav>{links}</nav></header>'
            f'<main><h1>{e(title)}</h1>{body}</main></body></html>')
    return page.encode()


def error(request, message):
    return layout(request, "Error", f'<p class="error">{e(message)}</p>')


def _table(headers, rows, empty="nothing here"):
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chart(points, width=600, height=120):
    """Throughput of the last 10 minutes as an inline SVG polyline (no script, no image)."""
    if len(points) < 2:
        return '<p class="empty">the chart fills in over the first minute</p>'
    top = max(v for _, v in points) or 1.0
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1)
    coords = " ".join(f"{(t - t0) / span * width:.1f},{height - v / top * (height - 10):.1f}"
                      for t, v in points)
    return (f'<figure><svg viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="tasks per second, last 10 minutes"><polyline points="{coords}"/></svg>'
            f'<figcaption>tasks/s over the last 10 minutes (peak {top:,.1f}/s)</figcaption>'
            f'</figure>')


def overview(request, report):
    processes = report["processes"]
    cluster = report.get("cluster")
    if processes:
        columns = processes + ([dict(report["total"], pid="total", role="", host="")]
                               if len(processes) > 1 else [])
        shown = [("host", "host", str)] + ROWS if cluster else ROWS
        rows = [[e(label)] + [e(_cell(fmt, p.get(key))) for p in columns]
                for label, key, fmt in shown if key != "pid"]
        figures = _table(["pid"] + [str(p.get("pid")) for p in columns], rows)
        blockers = [f"<li>{e(p.get('pid'))}: <code>{e(name)}</code> blocked the hub "
                    f"{e(n)} time(s)</li>" for p in processes
                    for name, n in sorted((p.get("hub_blocked_by") or {}).items())]
        if blockers:
            figures += f'<h2>Tasks that blocked the hub</h2><ul>{"".join(blockers)}</ul>'
    elif cluster:
        figures = '<p class="empty">no live process publishes its figures on this backend</p>'
    else:
        log = report.get("log") or {}
        figures = (f'<p class="empty">no live greenqueue process in {e(report["data_dir"])}; '
                   f'from the log: {e(log.get("pending", "-"))} pending, '
                   f'{e(log.get("delayed", "-"))} delayed, {e(log.get("dead", "-"))} dead</p>')
    if cluster:  # a shared backend: every process of every host, the server's own counts
        figures = (f'<p id="cluster">{e(cluster.get("backend"))}: {e(cluster_line(cluster))}'
                   f'</p>{figures}')
    body = (f'<section id="figures" data-refresh>{chart(report.get("throughput", []))}'
            f'{figures}<p class="muted">updated {e(_when(report["time"]))}</p></section>')
    return layout(request, "Overview", body, refresh=True)


def tasks(request, rows):
    table = _table(["task", "enqueued", "processed", "failed", "dead", "rate", "wait p50",
                    "wait p99", "run p50", "run p99"],
                   [[f"<code>{e(r['task'])}</code>", e(r["enqueued"]), e(r["processed"]),
                     e(r["failed"]), e(r["dead"]),
                     e("-" if r["rate"] is None else f"{r['rate']:.2f}/s"),
                     e(_seconds(r["wait_p50"])), e(_seconds(r["wait_p99"])),
                     e(_seconds(r["run_p50"])), e(_seconds(r["run_p99"]))] for r in rows],
                   "no task has run since the processes started")
    body = (f'<section id="tasks" data-refresh>{table}<p class="muted">counts since each '
            f'process started; percentiles are histogram bucket bounds</p></section>')
    return layout(request, "Tasks", body, refresh=True)


def delayed(request, rows, total, page):
    now = time.time()
    table = _table(["due", "in", "task", "id", "priority", "attempt"],
                   [[e(_when(r["due"])), e(_seconds(max(0.0, r["due"] - now))),
                     f"<code>{e(r['task'])}</code>", f"<code>{e(r['id'])}</code>",
                     e(r["priority"]), e(r["attempt"])] for r in rows], "no delayed task")
    pager = []
    if page > 0:
        pager.append(f'<a href="{e(request.base)}/delayed?page={page - 1}">newer</a>')
    if (page + 1) * 50 < total:
        pager.append(f'<a href="{e(request.base)}/delayed?page={page + 1}">later</a>')
    body = (f"<p>{e(total)} delayed task(s), next due first (page {page + 1}).</p>{table}"
            f'<p class="pager">{" ".join(pager)}</p>')
    return layout(request, "Delayed", body)


def _form(request, action, task_id, label, kind):
    return (f'<form method="post" action="{e(request.base)}/dead/{action}">'
            f'<input type="hidden" name="csrf" value="{e(request.csrf)}">'
            f'<input type="hidden" name="id" value="{e(task_id)}">'
            f'<button type="submit" class="{kind}" data-id="{e(task_id)}">{e(label)}</button>'
            f'</form>')


def dead(request, rows):
    table = _table(["task", "id", "attempts", "last failure", "error", ""],
                   [[f"<code>{e(r['task'])}</code>",
                     f'<a href="{e(request.base)}/dead/{e(r["id"])}">{e(r["id"])}</a>',
                     e(r["attempts"]), e(_when(r.get("failed_at"))),
                     f'<span class="error">{e(r.get("error"))}: {e(r.get("message"))}</span>',
                     _form(request, "retry", r["id"], "Retry", "retry") +
                     _form(request, "delete", r["id"], "Delete", "delete")] for r in rows],
                   "no dead tasks")
    return layout(request, "Dead set", f"<p>{len(rows)} dead task(s).</p>{table}")


def dead_task(request, t):
    args = "(cannot decode here)" if t.get("args") is None else ", ".join(
        t["args"] + [f"{k}={v}" for k, v in t["kwargs"].items()])
    rows = [("task", f"<code>{e(t['task'])}</code>"), ("id", f"<code>{e(t['id'])}</code>"),
            ("arguments", f"<code>({e(args)})</code>"), ("attempts", e(t["attempts"])),
            ("enqueued", e(_when(t.get("enqueued_at")))),
            ("first failure", e(_when(t.get("first_failed_at")))),
            ("last failure", e(_when(t.get("failed_at")))),
            ("error", f'<span class="error">{e(t.get("error"))}: {e(t.get("message"))}</span>')]
    details = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    body = (f"<table class=details>{details}</table><h2>Traceback</h2>"
            f"<pre>{e(t.get('traceback'))}</pre>"
            f"{_form(request, 'retry', t['id'], 'Retry', 'retry')}"
            f"{_form(request, 'delete', t['id'], 'Delete', 'delete')}")
    return layout(request, f"Dead task {t['id']}", body)


def schedules(request, report):
    seen = {}
    for process in report["processes"]:
        for s in process.get("schedules") or []:
            if s.get("leader") or s.get("name") not in seen:
                seen[s.get("name")] = s
    table = _table(["name", "task", "when", "next run", "last run", "last outcome"],
                   [[e(s.get("name")), f"<code>{e(s.get('task'))}</code>", e(s.get("when")),
                     e(_when(s.get("next_run"))), e(_when(s.get("last_run"))),
                     e(s.get("last_outcome"))] for s in seen.values()],
                   "no periodic task is defined")
    return layout(request, "Schedules", table)
