"""The web dashboard: loopback refusal, the token, CSRF and escaping tried from a test client
against a real server's data; the pages over real HTTP; a real headless Chromium that sees a
dead task, presses Retry and sees it run.

The browser test needs the Debian packages chromium and chromium-driver (.ci/run installs them):
without them it is skipped locally and fails under CI=true.
"""
import os
import re
import shutil

import pytest
import requests
from werkzeug.test import Client

from greenqueue.dashboard import make_app
from tests.dead_app import runs
from tests.serving import ROOT, procs, run_server, wait_until

__all__ = ["procs"]
APP = "tests.dead_app:app"
HOSTILE = '<img src=x onerror="window.pwned=1">'


def start(tmp_path, *args):
    env = {"GQ_BROKEN": str(tmp_path / "broken"), "GQ_RAN": str(tmp_path / "ran")}
    return run_server(tmp_path, "--graceful-timeout", "1", "--dashboard", "/greenqueue", *args,
                      app=APP, env=env)


def fill(server, **query):
    response = requests.get(server.url + "/fill", params=query, timeout=30)
    response.raise_for_status()
    return response.json()["ids"]


@pytest.fixture
def dead_server(tmp_path, procs):
    (tmp_path / "broken").touch()
    server = start(tmp_path)
    procs.append(server)
    ids = fill(server, n=1, label=HOSTILE)
    fill(server, n=2, delay=3600, label="later")
    wait_until(lambda: "1 dead task(s)" in server.get("/greenqueue/dead").text,
               what="a dead task on the page")
    return server, ids[0]


def test_pages_over_http_escape_task_data(dead_server):
    server, task_id = dead_server
    dead = server.get("/greenqueue/dead").text
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in dead
    assert HOSTILE not in dead
    shown = server.get(f"/greenqueue/dead/{task_id}").text
    assert "raise Broken" in shown and HOSTILE not in shown and "first failure" in shown
    assert "2 delayed task(s)" in server.get("/greenqueue/delayed").text
    assert "tests.dead_app:fragile" in server.get("/greenqueue/tasks").text
    overview = server.get("/greenqueue/")
    assert overview.status_code == 200 and "memory RSS" in overview.text
    assert "default-src 'self'" in overview.headers["Content-Security-Policy"]
    script = server.get("/greenqueue/static/dashboard.js")
    assert script.status_code == 200 and "data-refresh" in script.text
    assert server.get("/").json()["ids"] == []              # the app still answers the rest


def test_loopback_only_without_a_token(dead_server, tmp_path):
    app = make_app(tmp_path / "data")
    remote = Client(app).get("/dead", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert remote.status_code == 403 and b"loopback" in remote.data
    local = Client(app).get("/dead", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert local.status_code == 200 and b"1 dead task(s)" in local.data


def test_with_a_token_every_client_presents_it(dead_server, tmp_path):
    app = make_app(tmp_path / "data", token="s3cret")
    client = Client(app)
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/dead", environ_base=local).status_code == 401
    assert client.get("/dead?token=wrong", environ_base=local).status_code == 401
    entered = client.get("/dead?token=s3cret", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert entered.status_code == 303 and entered.headers["Location"] == "/dead"
    assert "HttpOnly" in entered.headers["Set-Cookie"]
    again = client.get("/dead", environ_base={"REMOTE_ADDR": "192.0.2.7"})   # the cookie
    assert again.status_code == 200 and b"1 dead task(s)" in again.data
    offsite = Client(app).get("/", environ_overrides={          # no redirect off the site
        "REMOTE_ADDR": "192.0.2.7", "PATH_INFO": "//evil.example/x",
        "QUERY_STRING": "token=s3cret"})
    assert offsite.status_code == 303 and offsite.headers["Location"] == "/evil.example/x"
    bearer = Client(app).get("/dead", headers={"Authorization": "Bearer s3cret"},
                             environ_base={"REMOTE_ADDR": "192.0.2.8"})
    assert bearer.status_code == 200


def test_posts_need_the_csrf_token(dead_server, tmp_path):
    server, task_id = dead_server
    client = Client(make_app(tmp_path / "data"))
    page = client.get("/dead")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    forged = Client(make_app(tmp_path / "data")).post("/dead/delete", data={"id": task_id,
                                                                           "csrf": csrf})
    assert forged.status_code == 403                  # no cookie: a cross-site form post
    wrong = client.post("/dead/delete", data={"id": task_id, "csrf": "guess"})
    assert wrong.status_code == 403
    assert "1 dead task(s)" in server.get("/greenqueue/dead").text
    done = client.post("/dead/delete", data={"id": task_id, "csrf": csrf})
    assert done.status_code == 303
    assert "0 dead task(s)" in server.get("/greenqueue/dead").text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def test_a_browser_sees_a_dead_task_retries_it_and_sees_it_run(dead_server, tmp_path):
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are missing (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium "
                    "chromium-driver); CI runs this test")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    server, task_id = dead_server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                               options=options)
    try:
        browser.get(server.url + "/greenqueue/dead")
        row = browser.find_element(By.CSS_SELECTOR, "tbody tr").text
        assert HOSTILE.split(" ")[0] in row and task_id in row     # shown as text
        assert browser.execute_script("return window.pwned") is None
        os.unlink(tmp_path / "broken")
        browser.find_element(By.CSS_SELECTOR, f'button.retry[data-id="{task_id}"]').click()
        wait_until(lambda: "0 dead task(s)" in browser.page_source, what="the empty dead set")
        wait_until(lambda: runs(tmp_path) == [f"{HOSTILE} 0"], what="the retried task's run")
        browser.get(server.url + "/greenqueue/")
        assert "memory RSS" in browser.page_source
        target = os.environ.get("GQ_DASHBOARD_SCREENSHOT")
        if target:  # docs/dashboard.png is made this way, with the data of this test
            browser.get(server.url + "/greenqueue/" + os.environ.get("GQ_SCREENSHOT_PAGE", ""))
            browser.save_screenshot(os.path.join(ROOT, target))
    finally:
        browser.quit()
