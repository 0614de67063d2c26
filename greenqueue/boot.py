"""Start-up checks for ``greenqueue run``: each turns a bad setup into one clear sentence.

Duties:
- ``load_app("pkg.mod:attr")`` (or ``"pkg.mod:create_app()"``, a factory) imports the user's
  app; a failure inside their code shows *their* traceback, not a stack of ours;
- ``listen("host:port")`` binds the listening socket (``unix:/path`` too); a busy port says so;
- ``prepare_data_dir`` creates the data directory (0700) and proves it writable;
- ``configure_logging`` puts the request id on every line (``%(request_id)s``).

Every failure raises :class:`StartupError`; the CLI prints its message and exits with status 2.
"""
import errno
import importlib
import logging
import os
import socket
import sys
import traceback

from .context import RequestIdFilter

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] [%(request_id)s] %(name)s: %(message)s"
STARTUP_ERROR_STATUS = 2


class StartupError(Exception):
    """The server cannot start; the message says why and what to do."""


# -- the app -----------------------------------------------------------------------------------

def load_app(target):
    """Import ``module:attr`` (``attr`` may be ``factory()``) and return the WSGI callable."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise StartupError(f"{target!r} is not MODULE:ATTR (for example app:application or "
                           f"pkg.web:create_app())")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StartupError(f"cannot import {module_name!r}: no module named {exc.name!r} "
                               f"(run from the directory that holds it, or set PYTHONPATH)"
                               ) from None
        raise StartupError(_user_traceback(exc, f"importing {module_name!r} failed")) from None
    except Exception as exc:  # noqa: BLE001 - any error of the user's module is reported
        raise StartupError(_user_traceback(exc, f"importing {module_name!r} failed")) from None
    call = attr.endswith("()")
    name = attr[:-2] if call else attr
    obj = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StartupError(f"module {module_name!r} has no attribute {name!r} "
                               f"(target {target!r})") from None
    if call:
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise StartupError(_user_traceback(exc, f"calling {module_name}:{attr} failed")
                               ) from None
    if not callable(obj):
        raise StartupError(f"{target!r} is a {type(obj).__name__}, not a WSGI application "
                           f"(a callable taking environ and start_response)")
    return obj


def _user_traceback(exc, headline):
    """The traceback without our frames and importlib's, so the user sees their own code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename not in (__file__, importlib.__file__)
              and not f.filename.startswith("<frozen")]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return f"{headline}:\nTraceback (most recent call last):\n{''.join(lines).rstrip()}"


# -- the listening socket ----------------------------------------------------------------------

def parse_bind(bind):
    """``host:port``, ``[v6]:port``, ``:port``, ``port`` or ``unix:/path``."""
    if bind.startswith("unix:"):
        return socket.AF_UNIX, bind[5:]
    host, sep, port = bind.rpartition(":")
    if not sep:
        host, port = "", bind
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port)
        if not 0 <= port < 65536:
            raise ValueError
    except ValueError:
        raise StartupError(f"--bind {bind!r}: expected HOST:PORT (like 127.0.0.1:8000)") from None
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)


def listen(bind, backlog=1024):
    family, address = parse_bind(bind)
    if family == socket.AF_UNIX:
        _remove_stale_unix_socket(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is already in use (another server is running there?)"
        elif exc.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
        raise StartupError(f"cannot listen on {bind}: {reason}") from None
    return sock


def _remove_stale_unix_socket(path):
    """A socket file nobody listens on (left by a killed server) would make bind fail."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass  # missing, or not a socket: bind reports it
    finally:
        probe.close()


def remove_socket_file(address):
    """After the last close of a ``unix:PATH`` listener (``bound_address``), remove its file."""
    if address and address.startswith("unix:"):
        try:
            os.unlink(address[5:])
        except OSError:
            pass


def bound_address(sock):
    name = sock.getsockname()
    if isinstance(name, tuple):
        host = name[0]
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return f"unix:{name}"


# -- the data directory ------------------------------------------------------------------------

def prepare_data_dir(path):
    """Create the directory (0700) if needed and prove we can write in it; return its path."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(f"data directory {path} is not usable: {exc.strerror or exc} "
                           f"(choose another with --data-dir or GREENQUEUE_DATA_DIR)") from None
    return path


# -- logging -----------------------------------------------------------------------------------

def configure_logging(level="info"):
    """One stderr handler on the root logger, with the request id on every line."""
    numeric = logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise StartupError(f"--log-level {level!r}: use debug, info, warning, error or critical")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_greenqueue", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._greenqueue = True
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
