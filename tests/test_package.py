"""The package from outside: import without side effects, exported names, console script."""
import importlib.metadata
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import greenqueue
from greenqueue import errors


def run_python(code, cwd, **env):
    """Run ``code`` in a fresh, unpatched interpreter; return its stdout (fail on error)."""
    environment = {"PATH": "/usr/bin:/bin", "TMPDIR": str(cwd), "HOME": str(cwd), **env}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_import_has_no_side_effects(tmp_path):
    out = run_python("""
        import atexit, gc, logging, os, sys, threading
        fds = len(os.listdir("/proc/self/fd"))
        exits = atexit._ncallbacks()
        import greenqueue
        from gevent import monkey
        patched = [m for m in ("socket", "threading", "time", "select", "os", "ssl",
                               "subprocess", "signal", "queue", "thread")
                   if monkey.is_module_patched(m)]
        assert not patched, f"import greenqueue patched {patched}"
        import socket, time
        assert socket.socket.__module__ == "socket" and time.sleep.__module__ == "time"
        assert threading.active_count() == 1, threading.enumerate()
        from gevent._hub_local import get_hub_if_exists
        assert get_hub_if_exists() is None, "import greenqueue created a gevent hub"
        import greenlet
        others = [g for g in gc.get_objects()
                  if isinstance(g, greenlet.greenlet) and g is not greenlet.getcurrent()]
        assert not others, f"import greenqueue made greenlets: {others}"
        assert len(os.listdir("/proc/self/fd")) == fds, "import greenqueue left a file open"
        assert atexit._ncallbacks() == exits, "import greenqueue registered an atexit hook"
        assert logging.getLogger().handlers == [], "import greenqueue configured logging"
        assert greenqueue.current_runtime() is None
        print("clean")
    """, tmp_path)
    assert out.strip() == "clean"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_defining_a_task_has_no_side_effects_either(tmp_path):
    run_python("""
        import threading, greenqueue
        from gevent._hub_local import get_hub_if_exists
        @greenqueue.task
        def f(x):
            return x
        class T(greenqueue.Task):
            def perform(self):
                pass
        assert f(3) == 3
        assert get_hub_if_exists() is None and threading.active_count() == 1
        assert greenqueue.current_runtime() is None
    """, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_starting_without_monkey_patching_warns_unless_memory_backed(tmp_path):
    out = run_python("""
        import warnings, greenqueue
        from greenqueue.log.memory import MemoryLog

        def warnings_of(**settings):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                greenqueue.start(**settings)
                greenqueue.stop(timeout=1)
            return [str(w.message) for w in caught]

        assert warnings_of(backend="memory") == []
        (message,) = warnings_of(backend=MemoryLog())
        assert "monkey" in message and "patch_all" in message, message
        print("ok")
    """, tmp_path)
    assert out.strip() == "ok"


def test_all_names_exist_and_errors_share_one_root():
    names = greenqueue.__all__
    assert len(names) == len(set(names))
    assert [n for n in names if not hasattr(greenqueue, n)] == []
    public = {"task", "Task", "wrap", "current", "Runtime", "configure", "start", "stop",
              "log_context", "RequestIdFilter", "PushTimeout", "TaskError", "GreenqueueError",
              "ConfigError"}
    assert public <= set(names)
    exported = {name for name in names if inspect.isclass(getattr(greenqueue, name))
                and issubclass(getattr(greenqueue, name), BaseException)}
    assert {"PushTimeout", "TaskError", "SerializationError", "TaskTimeout"} <= exported
    for name in exported - {"Shutdown"}:
        assert issubclass(getattr(greenqueue, name), greenqueue.GreenqueueError), name
        assert getattr(greenqueue, name) is getattr(errors, name)
    assert not issubclass(greenqueue.Shutdown, Exception)  # a task cannot swallow it


def test_star_import_gives_exactly_all(tmp_path):
    out = run_python("""
        from greenqueue import *
        import greenqueue
        missing = [n for n in greenqueue.__all__ if n not in globals()]
        assert not missing, missing
        print("ok")
    """, tmp_path)
    assert out.strip() == "ok"


def test_version_matches_the_installed_metadata():
    assert importlib.metadata.version("greenqueue") == greenqueue.__version__


def console_script():
    script = Path(sys.executable).parent / "greenqueue"
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    return str(script)


def test_console_script_help(tmp_path):
    for flag in ("--help", "-h"):
        proc = subprocess.run([console_script(), flag], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Usage: greenqueue")
        assert "durable background tasks" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_console_script_version(tmp_path):
    proc = subprocess.run([console_script(), "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert greenqueue.__version__ in proc.stdout


def test_a_memory_runtime_works_without_monkey_patching(tmp_path):
    out = run_python("""
        import time, warnings
        warnings.simplefilter("error")
        import gevent, greenqueue
        ran = []

        @greenqueue.task
        def note(x):
            ran.append(x)

        with greenqueue.Runtime(backend="memory", concurrency=2) as rt:
            note.enqueue(1)
            note.enqueue(2, delay=0.01)
            deadline = time.monotonic() + 5
            while len(ran) < 2 and time.monotonic() < deadline:
                gevent.sleep(0.001)
        greenqueue.configure(backend="memory")
        note.enqueue(3)  # auto-start, unpatched
        assert greenqueue.current_runtime().join(timeout=5)
        greenqueue.stop()
        print(ran)
    """, tmp_path)
    assert out.strip() == "[1, 2, 3]"
