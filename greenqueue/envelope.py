"""The unit that is logged and queued, and how a call becomes bytes and back.

An :class:`Envelope` carries what the log must know without unpickling anything (id, task name,
priority, due time, attempts made) and an opaque ``payload``: the pickled call
``(target, args, kwargs, log_context)``. ``target`` is ``None`` when the task is found again by
its name (an importable module-level task), else the callable itself, cloudpickled once and
cached. Pickling happens at enqueue so that a bad argument fails there, naming the argument,
never later in a worker.
"""
import inspect
import os
import pickle
import secrets
import struct
import time
from itertools import count

import cloudpickle

from . import spec as specs
from .errors import DecodeError, SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads


class Envelope:
    """One task occurrence. ``attempt`` counts attempts already made (0 before the first run).

    ``publish_at`` is a wall-clock epoch (0.0 = run as soon as possible); ``enqueued_at`` is the
    wall-clock time of the first enqueue, kept across retries and restarts to measure latency.
    """

    __slots__ = ("id", "name", "payload", "priority", "publish_at", "attempt", "enqueued_at",
                 "_packed")
    FIELDS = __slots__[:-1]

    def __init__(self, id, name, payload, priority=0, publish_at=0.0, attempt=0, enqueued_at=0.0):
        self.id = id
        self.name = name
        self.payload = payload
        self.priority = priority
        self.publish_at = publish_at
        self.attempt = attempt
        self.enqueued_at = enqueued_at
        self._packed = None

    def replace(self, **changes):
        fields = {name: getattr(self, name) for name in self.FIELDS}
        fields.update(changes)
        return Envelope(**fields)

    def pack(self):
        """The envelope as one bytes object (computed once; treat envelopes as frozen).

        Long-lived holders (the delayed heap, the disk log's index) keep this form: a bytes
        object is invisible to the cyclic garbage collector, so a million delayed tasks add
        nothing to a full collection's pause, and it is the disk log's add record body too.
        Layout: publish_at f64, enqueued_at f64, priority i32, attempt u32, id length u16,
        name length u16, id, name, payload.
        """
        packed = self._packed
        if packed is None:
            id_, name = self.id.encode(), self.name.encode()
            packed = self._packed = b"".join((
                _pack_fixed(self.publish_at, self.enqueued_at, self.priority, self.attempt,
                            len(id_), len(name)), id_, name, self.payload))
        return packed

    def __repr__(self):
        return f"<Envelope {self.id} {self.name} attempt={self.attempt} priority={self.priority}>"

    def __eq__(self, other):
        return isinstance(other, Envelope) and all(
            getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    __hash__ = None


_fixed = struct.Struct("<ddiIHH")
FIXED_SIZE = _fixed.size
_pack_fixed = _fixed.pack
_unpack_fixed = _fixed.unpack_from
_names = {}


def unpack(data, start=0, end=None):
    """The Envelope packed in ``data[start:end]`` (see Envelope.pack)."""
    publish_at, enqueued_at, priority, attempt, id_len, name_len = _unpack_fixed(data, start)
    start += FIXED_SIZE
    task_id = data[start:start + id_len].decode("ascii")
    start += id_len
    raw_name = data[start:start + name_len]
    name = _names.get(raw_name)
    if name is None:
        name = _names[raw_name] = raw_name.decode()
    return Envelope(task_id, name, data[start + name_len:end], priority, publish_at, attempt,
                    enqueued_at)


def packed_id(packed):
    """The task id of a packed envelope, without unpacking the rest."""
    id_len = packed[FIXED_SIZE - 4] | packed[FIXED_SIZE - 3] << 8
    return packed[FIXED_SIZE:FIXED_SIZE + id_len].decode("ascii")


def packed_publish_at(packed):
    return _unpack_double(packed)[0]


def packed_priority(packed):
    return _unpack_int(packed, 16)[0]


def packed_enqueued_at(packed):
    return _unpack_double(packed, 8)[0]


def as_envelope(item):
    """An Envelope from an Envelope or its packed bytes."""
    return unpack(item) if item.__class__ is bytes else item


_unpack_double = struct.Struct("<d").unpack_from
_unpack_int = struct.Struct("<i").unpack_from


# -- ids ---------------------------------------------------------------------------------------
# A random 64-bit prefix per process (renewed after fork) plus a counter: unique across
# processes and restarts without consulting the clock, so a clock that jumps back cannot
# produce a duplicate. Cheaper than uuid4 on the enqueue hot path.

def _new_prefix():
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_id():
    return f"{_prefix}{next(_counter):x}"


# -- the call ----------------------------------------------------------------------------------

def encode(target, args, kwargs, context, spec=None):
    """Pickle a call; on failure raise SerializationError naming the offending argument."""
    call = (target, args, kwargs, context)
    try:
        return _dumps(call, PROTOCOL)
    except Exception:
        pass
    try:
        return cloudpickle.dumps(call, PROTOCOL)
    except Exception as exc:
        raise _explain(exc, args, kwargs, getattr(spec, "fn", None)) from None


def _explain(exc, args, kwargs, fn):
    names = positional_names(fn, len(args))
    items = list(zip(names, args)) + list(kwargs.items())
    for name, value in items:
        try:
            cloudpickle.dumps(value, PROTOCOL)
        except Exception as arg_exc:
            return SerializationError(
                f"argument {name!r} cannot be serialised: {type(arg_exc).__name__}: {arg_exc}")
    return SerializationError(f"the task call cannot be serialised: {type(exc).__name__}: {exc}")


def positional_names(fn, n):
    """Names of the first ``n`` positional arguments of ``fn`` (for error messages)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if params[:1] == ["self"]:
        params = params[1:]
    return [params[i] if i < len(params) else f"#{i}" for i in range(n)]


def portable_name(name):
    """Whether a ``module:qualname`` task name can be found again in a fresh process."""
    return not name.startswith("__main__:") and "<locals>" not in name


_pickled_targets = {}


def pickled_target(spec):
    """cloudpickle a task spec once; the bytes go into every payload (a memcpy to pickle)."""
    data = cloudpickle.dumps(spec, PROTOCOL)
    _pickled_targets[data] = spec
    return data


def decode(env):
    """Return ``(spec, args, kwargs, context)`` for an envelope; DecodeError if impossible."""
    try:
        target, args, kwargs, context = _loads(env.payload)
    except Exception as exc:
        raise DecodeError(f"cannot unpickle task {env.name} ({env.id}): "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        if target is None:
            spec = specs.lookup(env.name)
        elif isinstance(target, bytes):
            spec = _spec_from_bytes(target, env.name)
        else:
            spec = target if isinstance(target, specs.TaskSpec) else specs.TaskSpec(target, env.name)
    except Exception as exc:
        raise DecodeError(str(exc)) from exc
    return spec, args, kwargs, context


_specs_by_bytes = {}


def _spec_from_bytes(data, name):
    spec = _specs_by_bytes.get(data)
    if spec is None:
        fn = _pickled_targets.get(data)
        if fn is None:
            fn = _loads(data)
        spec = fn if isinstance(fn, specs.TaskSpec) else specs.TaskSpec(fn, name)
        if len(_specs_by_bytes) > 10000:
            _specs_by_bytes.clear()
        _specs_by_bytes[data] = spec
    return spec


def now():
    return time.time()
