"""The envelope: ids, what a payload carries, and how decoding fails."""
import pickle
import sys

import pytest

import greenqueue
from greenqueue import envelope as envelopes
from greenqueue.envelope import Envelope, decode, encode, new_id
from greenqueue.log.memory import MemoryLog
from greenqueue.spec import TaskSpec
from tests import tasks


def test_ids_are_unique_strings():
    ids = [new_id() for _ in range(10000)]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)


def test_replace_eq_and_repr():
    env = Envelope("id1", "tests.tasks:record", b"x", priority=3, publish_at=1.5)
    again = env.replace(attempt=2)
    assert (again.id, again.priority, again.publish_at, again.attempt) == ("id1", 3, 1.5, 2)
    assert env.attempt == 0 and env != again and env == env.replace()
    assert env != "id1"
    assert repr(again) == "<Envelope id1 tests.tasks:record attempt=2 priority=3>"
    with pytest.raises(TypeError):
        hash(env)


def test_a_task_found_by_name_travels_as_its_name_only():
    payload = encode(None, (1,), {"b": 2}, {"request_id": "r"})
    spec, args, kwargs, context = decode(Envelope("i", "tests.tasks:add", payload))
    assert spec is tasks.add and (args, kwargs, context) == ((1,), {"b": 2}, {"request_id": "r"})
    assert b"tests.tasks" not in payload  # the name lives in the envelope, not the payload


def test_a_callable_pickled_by_value_is_decoded_in_another_process_too():
    def local(x):
        return x * 2

    data = envelopes.cloudpickle.dumps(local)
    payload = encode(data, (21,), {}, None)
    spec, args, _, _ = decode(Envelope("i", "tests:local", payload))
    assert spec.invoke(args, {}) == 42 and spec.name == "tests:local"


def test_the_runtime_imports_a_task_module_it_has_not_seen(make_runtime):
    if "tests.late_tasks" in sys.modules:
        pytest.skip("tests.late_tasks was imported by something else")
    log = MemoryLog()
    payload = pickle.dumps((None, ("late",), {}, None))
    log.append(Envelope(new_id(), "tests.late_tasks:imported_on_demand", payload))
    runtime = make_runtime(backend=log)
    assert runtime.join(timeout=2)
    assert sys.modules["tests.late_tasks"].ran == ["late"]


def test_decode_errors_name_the_task():
    with pytest.raises(greenqueue.DecodeError, match="tests.tasks:add"):
        decode(Envelope("i", "tests.tasks:add", b"garbage"))
    with pytest.raises(greenqueue.DecodeError, match="not defined"):
        decode(Envelope("i", "tests.tasks:gone", encode(None, (), {}, None)))


def test_unpicklable_argument_of_an_uninspectable_callable_is_named_by_position():
    with pytest.raises(greenqueue.SerializationError, match="argument '#0'"):
        encode(print, ((i for i in ()),), {}, None, TaskSpec(print))
