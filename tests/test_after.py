"""enqueue(after="response"): held until the response succeeded, through the request-id
middleware on a real gevent WSGI server; and after=greenqueue.on_commit(...)."""
import logging

import pytest
import requests
from gevent.pywsgi import WSGIServer

import greenqueue
from greenqueue.wsgi import RequestIdMiddleware
from tests import feature_tasks as ft
from tests import tasks
from tests.helpers import wait_until


def app(environ, start_response):
    """/ok enqueues and answers 200; /error enqueues and answers 500; /raise enqueues and
    raises; /broken-body enqueues, answers 200 and fails while producing the body."""
    path = environ["PATH_INFO"]
    task_id = ft.notify.enqueue(path, after="response")
    if path == "/raise":
        raise RuntimeError("the request failed")
    status = "500 Internal Server Error" if path == "/error" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    if path == "/broken-body":
        return broken_body()
    return [task_id.encode()]


def broken_body():
    yield b"partial"
    raise RuntimeError("failed while streaming")


@pytest.fixture
def server(greenqueue_runtime):
    http = WSGIServer(("127.0.0.1", 0), RequestIdMiddleware(app), log=None, error_log=None)
    http.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.stop(timeout=1)


def test_held_until_a_successful_response(server, greenqueue_runtime):
    response = requests.get(server + "/ok", headers={"X-Request-Id": "req-1"}, timeout=10)
    assert response.status_code == 200
    # the server closes the response (and logs the task) just after the client has it
    wait_until(lambda: greenqueue_runtime.stats()["enqueued"] == 1, timeout=5)
    greenqueue_runtime.drain()
    assert tasks.seen == [("/ok", "req-1")]  # logged inside the request's context
    assert greenqueue_runtime.stats()["processed"] == 1


def test_nothing_is_logged_before_the_response_ends(greenqueue_runtime):
    seen_status = []
    body = RequestIdMiddleware(app)({"PATH_INFO": "/ok"},
                                    lambda status, headers, exc=None: seen_status.append(status))
    assert greenqueue_runtime.enqueued() == []
    task_id = b"".join(body).decode()
    assert seen_status == ["200 OK"]
    body.close()
    assert [e.id for e in greenqueue_runtime.enqueued()] == [task_id]  # the id it returned


@pytest.mark.parametrize("path", ["/error", "/raise", "/broken-body"])
def test_dropped_when_the_request_fails(server, greenqueue_runtime, caplog, path):
    with caplog.at_level(logging.WARNING, logger="greenqueue.after"):
        try:
            requests.get(server + path, timeout=10)
        except requests.RequestException:
            pass  # a body that breaks mid-stream may cut the connection
        wait_until(lambda: "dropped" in caplog.text, timeout=5)
        greenqueue_runtime.drain()
    assert greenqueue_runtime.enqueued() == [] and tasks.seen == []
    assert "dropped 1 task(s)" in caplog.text and ft.notify.name in caplog.text


def test_outside_a_request_it_is_enqueued_at_once(greenqueue_runtime):
    task_id = ft.notify.enqueue(1, after="response")
    assert [e.id for e in greenqueue_runtime.enqueued()] == [task_id]
    with pytest.raises(greenqueue.TaskError, match="after must be"):
        ft.notify.enqueue(1, after="commit")


def test_on_commit_enqueues_when_the_transaction_hook_fires(greenqueue_runtime):
    callbacks = []  # a stand-in for django.db.transaction.on_commit's list
    task_id = ft.notify.enqueue(2, after=greenqueue.on_commit(callbacks.append))
    assert greenqueue_runtime.enqueued() == [] and len(callbacks) == 1
    callbacks.pop()()  # the transaction commits
    assert [e.id for e in greenqueue_runtime.enqueued()] == [task_id]
    with pytest.raises(greenqueue.SerializationError):
        ft.notify.enqueue((x for x in "unpicklable"), after=greenqueue.on_commit(callbacks.append))
    assert callbacks == []
