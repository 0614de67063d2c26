"""A small Flask app whose endpoint enqueues a slow task and answers at once.

    pip install -e '.[examples]'
    greenqueue run examples.flask_app:app      # or the factory: 'examples.flask_app:create_app()'
    curl -i -X POST http://127.0.0.1:8000/users/7/report

The response carries ``X-Request-Id``; the task's log lines carry the same id.
"""
import logging
import os

from flask import Flask, jsonify, request

from examples.tasks import fetch_report

log = logging.getLogger("examples.flask_app")


def create_app():
    app = Flask(__name__)

    @app.get("/")
    def index():
        return jsonify(hello="greenqueue", pid=os.getpid())

    @app.post("/users/<int:user_id>/report")
    def report(user_id):
        seconds = float(request.args.get("seconds", 2.0))
        task_id = fetch_report.enqueue(user_id, seconds=seconds)
        log.info("enqueued report for user %s as task %s", user_id, task_id)
        return jsonify(task_id=task_id, pid=os.getpid()), 202

    return app


app = create_app()
