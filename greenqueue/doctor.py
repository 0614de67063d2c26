"""``greenqueue doctor MODULE:ATTR``: what will hurt this app under gevent, each with its fix.

Duties (each check returns :class:`Finding` objects; none changes anything):
- ``check_patching``: the app is imported once more in a fresh interpreter *without* the
  launcher's patching, as gunicorn or ``python app.py`` would: does it patch at all, and did
  ``ssl``/``threading`` come before its ``monkey.patch_all()`` (gevent's own warnings, and the
  import order seen by an audit hook);
- ``check_app``: the app imported the way ``greenqueue run`` does (patched first, then
  ``boot.load_app``), then ``check_drivers`` looks at the database and RPC drivers it loaded:
  psycopg2 without a wait callback, psycopg 3 on its C wait function, grpc without gevent
  support, and C drivers that always block (mysqlclient);
- ``check_data_dir``: the data directory on a network file system (no reliable ``flock`` or
  ``fsync``) or without room; ``check_clock``: the kernel's own estimate of the clock error,
  and a log written "in the future" by a clock that has since jumped back.

Levels: "ok", "warning" (works, but watch it), "problem" (will hurt: exit status 1).
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "glusterfs", "ceph",
              "fuse.ceph", "lustre", "afs", "fuse.s3fs", "fuse.gcsfuse", "davfs", "fuse.rclone"}
MIN_FREE_BYTES = 1 << 30    # below this (or 5 % of the disk) a busy log can fill the disk
MAX_CLOCK_ERROR = 1.0       # seconds: delayed tasks and retries are due by the wall clock


@dataclass
class Finding:
    check: str
    level: str          # "ok", "warning" or "problem"
    message: str
    fix: str = ""


# -- patching order, in a fresh interpreter -------------------------------------------------------

_PROBE = r"""
import importlib, json, os, sys, warnings
target, out = sys.argv[1], sys.argv[2]
order = []
sys.addaudithook(lambda event, args: event == "import" and order.append(args[0]))
sys.path.insert(0, os.getcwd())
error = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        module = importlib.import_module(target.partition(":")[0])
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
monkey = sys.modules.get("gevent.monkey")
patched = sorted(monkey.saved) if monkey is not None else []
def first(name):
    return order.index(name) if name in order else None
with open(out, "w") as f:
    json.dump({"error": error, "patched": patched, "ssl": first("ssl"),
               "threading": first("threading"), "monkey": first("gevent.monkey"),
               "warnings": [str(w.message) for w in caught
                            if "monkey" in type(w.message).__name__.lower()
                            or "monkey" in str(w.message).lower()]}, f)
"""


def check_patching(target, timeout=60.0):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "probe.json")
        try:
            subprocess.run([sys.executable, "-c", _PROBE, target, out], timeout=timeout,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            with open(out) as f:
                probe = json.load(f)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            return [Finding("patching", "warning", f"could not import the app on its own to "
                            f"check its patching order: {exc}")]
    return patching_findings(probe)


def patching_findings(probe):
    """Findings from the probe's report (a dict; see _PROBE)."""
    name = "patching"
    if probe["error"]:
        return [Finding(name, "warning", f"importing the app without greenqueue's launcher "
                        f"failed ({probe['error']}); its own patching was not checked")]
    if not probe["patched"]:
        return [Finding(name, "ok", "the app does not monkey-patch by itself: fine under "
                        "`greenqueue run` (which patches first)",
                        "under gunicorn use `-k gevent`; a script of your own must call "
                        "gevent.monkey.patch_all() before any other import")]
    findings = []
    for message in probe["warnings"]:
        findings.append(Finding(name, "problem", f"gevent: {message}",
                                "call gevent.monkey.patch_all() first thing in the entry "
                                "module, before importing anything else"))
    monkey_at = probe["monkey"]
    for module, level in (("ssl", "problem"), ("threading", "warning")):
        at = probe[module]
        if at is not None and monkey_at is not None and at < monkey_at and \
                not any(module in m for m in probe["warnings"]):
            findings.append(Finding(name, level, f"{module} was imported before the app's "
                                    f"monkey-patching",
                                    "move gevent.monkey.patch_all() above every other import "
                                    "of the entry module"))
    unpatched = sorted({"socket", "ssl", "select", "time", "thread", "threading"}
                       - set(probe["patched"]))
    if unpatched:
        findings.append(Finding(name, "problem", f"the app's monkey-patching leaves "
                                f"{', '.join(unpatched)} unpatched: those calls block the hub",
                                "use gevent.monkey.patch_all() without exclusions"))
    if not findings:
        findings.append(Finding(name, "ok", "the app patches first, and everything"))
    return findings


# -- the app as greenqueue run imports it ---------------------------------------------------------

def check_app(target):
    from gevent import monkey
    findings = []
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()  # as `greenqueue run` does when launched without bin/greenqueue
    import warnings
    from .boot import StartupError, load_app
    try:
        with warnings.catch_warnings():  # "patching more than once": the probe covers that
            warnings.simplefilter("ignore")
            load_app(target)
    except StartupError as exc:
        return [Finding("app", "problem", f"the app does not load: {exc}",
                        "fix the import error first; `greenqueue run` would refuse to start")]
    findings.append(Finding("app", "ok", f"{target} loads under `greenqueue run`'s patching"))
    return findings + check_drivers(sys.modules)


def check_drivers(modules):
    findings = []
    psycopg2 = modules.get("psycopg2")
    if psycopg2 is not None:
        extensions = modules.get("psycopg2.extensions")
        if extensions is None or extensions.get_wait_callback() is None:
            findings.append(Finding("drivers", "problem", "psycopg2 has no wait callback: every "
                                    "query blocks the hub until the database answers",
                                    "pip install psycogreen and call psycogreen.gevent."
                                    "patch_psycopg() at start (or psycopg2.extensions."
                                    "set_wait_callback(psycopg2.extras.wait_select))"))
        else:
            findings.append(Finding("drivers", "ok", "psycopg2 waits through a callback"))
    waiting = modules.get("psycopg.waiting")
    if waiting is not None:
        if getattr(waiting, "wait_c", None) is not None and waiting.wait is waiting.wait_c:
            findings.append(Finding("drivers", "problem", "psycopg 3 waits in C "
                                    "(psycopg.waiting.wait_c), which blocks the hub",
                                    "import psycopg only after patching, upgrade psycopg (3.2 "
                                    "detects gevent), or set PSYCOPG_WAIT_FUNC=wait_select"))
        else:
            findings.append(Finding("drivers", "ok", f"psycopg 3 waits with "
                                    f"{waiting.wait.__name__} (gevent-friendly)"))
    if "grpc" in modules:
        cygrpc = modules.get("grpc._cython.cygrpc")
        if cygrpc is None or not getattr(cygrpc, "g_gevent_activated", False):
            findings.append(Finding("drivers", "problem", "grpc is loaded without gevent "
                                    "support: its calls block the hub",
                                    "call grpc.experimental.gevent.init_gevent() right after "
                                    "patching"))
    if "MySQLdb" in modules:
        findings.append(Finding("drivers", "problem", "mysqlclient (MySQLdb) is C code that "
                                "gevent cannot patch: every query blocks the hub",
                                "use PyMySQL (pure Python, patched sockets)"))
    if not findings:
        findings.append(Finding("drivers", "ok", "no database or RPC driver known to block "
                                "the hub is loaded"))
    return findings


# -- the data directory and the clock ------------------------------------------------------------

def mount_of(path, mounts_text):
    """(mount point, fs type) of ``path`` from the text of /proc/mounts (longest prefix)."""
    best = ("/", "unknown")
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                len(point) >= len(best[0]):
            best = (point, fields[2])
    return best


def check_data_dir(data_dir):
    path = os.path.abspath(data_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    findings = []
    try:
        with open("/proc/mounts") as f:
            point, fstype = mount_of(os.path.realpath(existing), f.read())
    except OSError:
        point, fstype = None, "unknown"
    if fstype in NETWORK_FS:
        findings.append(Finding("data dir", "problem", f"{path} is on {fstype} ({point}): "
                                f"flock and fsync are not reliable there, so two processes may "
                                f"own one log or lose acknowledged tasks",
                                "use a local disk for --data-dir, or a redis:// or "
                                "postgresql:// --backend to share tasks between machines"))
    usage = shutil.disk_usage(existing)
    if usage.free < min(MIN_FREE_BYTES, usage.total * 0.05):
        findings.append(Finding("data dir", "problem", f"only {usage.free / 2**20:.0f} MB free "
                                f"on the disk of {path}: a full disk refuses enqueues",
                                "free space or move --data-dir"))
    if not os.access(existing, os.W_OK | os.X_OK):
        findings.append(Finding("data dir", "problem", f"{existing} is not writable",
                                "choose another --data-dir"))
    if not findings:
        findings.append(Finding("data dir", "ok", f"{path}: local ({fstype}), "
                                f"{usage.free / 2**30:.1f} GB free"))
    return findings


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("rest", ctypes.c_byte * 200)]


def kernel_clock_error():
    """(synchronised, max error in seconds) from adjtimex(2), or None where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5, timex.maxerror / 1e6   # 5: TIME_ERROR, the clock is not synchronised


def check_clock(data_dir, now=None):
    now = time.time() if now is None else now
    findings = []
    kernel = kernel_clock_error()
    if kernel is not None:
        synced, error = kernel
        if not synced or error > MAX_CLOCK_ERROR:
            findings.append(Finding("clock", "warning", f"the kernel does not vouch for the "
                                    f"clock (synchronised: {synced}, max error {error:.1f} s): "
                                    f"delays and retries are due by the wall clock",
                                    "run an NTP client (chrony, systemd-timesyncd)"))
    from .log.disk import segment_paths
    from .log.format import scan
    newest = 0.0
    for segment in segment_paths(os.path.abspath(data_dir)):
        try:
            with open(segment, "rb") as f:
                info = scan(f.read(4096), None, lambda *a: None).info
        except (OSError, ValueError):
            continue
        if info is not None and info.created_at:
            newest = max(newest, info.created_at)
    if newest > now + 60:
        findings.append(Finding("clock", "problem", f"the log in {data_dir} was written "
                                f"{newest - now:.0f} s in the future of this clock: it has "
                                f"jumped back, and delayed tasks will run late",
                                "set the clock right (NTP) before serving"))
    if not findings:
        findings.append(Finding("clock", "ok", "the kernel reports a synchronised clock"
                                if kernel else "no sign of a clock far off"))
    return findings


def examine(target, data_dir):
    """Every finding, in the order they are shown."""
    return (check_patching(target) + check_app(target) + check_data_dir(data_dir)
            + check_clock(data_dir))


def as_dicts(findings):
    return [asdict(f) for f in findings]
