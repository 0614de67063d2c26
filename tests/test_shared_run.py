"""``greenqueue run --backend URL``: two servers, each with its own data directory, share the
work that requests to one of them enqueue (the multi-host shape, on one machine)."""
import re

import pytest

from tests import backends
from tests.serving import procs, run_server, wait_until  # noqa: F401 - procs is a fixture


@pytest.fixture(params=["redis", "postgres"])
def url(request):
    url = backends.shared_url(request.param)
    yield url
    backends.drop(url)


def test_two_servers_share_the_tasks_one_of_them_enqueues(url, tmp_path, procs):  # noqa: F811
    servers = []
    for name in ("a", "b"):
        server = run_server(tmp_path, "--backend", url, "--concurrency", "2", name=name,
                            data_dir=tmp_path / f"data-{name}")
        procs.append(server)
        servers.append(server)
    a, b = servers
    enqueued = [a.get(f"/report?user={i}&seconds=0.1").json()["task_id"] for i in range(20)]

    def done():
        return [re.findall(r": done \(task (\w+)\)", s.output()) for s in servers]
    wait_until(lambda: sum(map(len, done())) >= 20, timeout=20, what="20 reports")
    by_a, by_b = done()
    assert sorted(by_a + by_b) == sorted(enqueued)  # each once, in one server or the other
    assert by_b, "the server that took no request ran none of the tasks"
    for server in servers:
        assert server.terminate() == 0
