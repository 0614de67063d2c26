"""``greenqueue doctor``: run as a real command on real apps; the parsing helpers on samples."""
import json
import os
import subprocess
import time

import pytest

from greenqueue.doctor import check_clock, mount_of, patching_findings
from greenqueue.envelope import Envelope, new_id
from greenqueue.log.disk import DiskLog
from tests.serving import ROOT, greenqueue


def doctor(tmp_path, target, *args, env=None):
    out = subprocess.run(greenqueue("doctor", target, "--data-dir", tmp_path / "data", *args),
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **(env or {})))
    return out.returncode, out.stdout


def test_a_plain_app_has_no_problem(tmp_path):
    status, out = doctor(tmp_path, "examples.wsgi_app:app")
    assert status == 0, out
    assert "PROBLEM" not in out
    assert "ok       app: examples.wsgi_app:app loads" in out
    assert "ok       data dir:" in out and "0 problem(s)" in out


def test_late_patching_is_a_problem_with_its_fix(tmp_path):
    status, out = doctor(tmp_path, "tests.doctor_late_app:app")
    assert status == 1
    assert "PROBLEM  patching: ssl was imported before the app's monkey-patching" in out
    assert "WARNING  patching: threading was imported before" in out
    assert "leaves thread, time unpatched" in out
    assert "fix: move gevent.monkey.patch_all() above every other import" in out


def test_psycopg_on_its_c_wait_is_named(tmp_path):
    pytest.importorskip("psycopg")
    status, out = doctor(tmp_path, "tests.doctor_psycopg_app:app", "--json")
    drivers = [f for f in json.loads(out) if f["check"] == "drivers"]
    assert status == 0 and [f["level"] for f in drivers] == ["ok"]
    status, out = doctor(tmp_path, "tests.doctor_psycopg_app:app", "--json",
                         env={"PSYCOPG_WAIT_FUNC": "wait_c"})
    [finding] = [f for f in json.loads(out) if f["check"] == "drivers"]
    assert status == 1 and finding["level"] == "problem" and "wait_c" in finding["message"]
    assert "PSYCOPG_WAIT_FUNC=wait_select" in finding["fix"]


def test_an_app_that_does_not_load(tmp_path):
    status, out = doctor(tmp_path, "tests.no_such_module:app")
    assert status == 1 and "PROBLEM  app: the app does not load" in out


def test_network_file_systems_are_found_by_the_longest_mount():
    mounts = ("/dev/sda1 / ext4 rw 0 0\n"
              "server:/export /srv/shared nfs4 rw 0 0\n"
              "/dev/sdb1 /srv/shared/local ext4 rw 0 0\n")
    assert mount_of("/srv/shared/app/data", mounts) == ("/srv/shared", "nfs4")
    assert mount_of("/srv/shared/local/data", mounts) == ("/srv/shared/local", "ext4")
    assert mount_of("/srv/sharedx", mounts) == ("/", "ext4")


def test_gevents_own_warning_is_reported():
    findings = patching_findings({"error": None, "patched": ["socket", "ssl", "select", "time",
                                                             "thread", "threading"],
                                  "ssl": None, "threading": None, "monkey": 3,
                                  "warnings": ["Monkey-patching ssl after ssl has already been "
                                               "imported may lead to errors"]})
    assert [(f.level, f.message[:30]) for f in findings] == \
        [("problem", "gevent: Monkey-patching ssl af")]


def test_a_log_written_in_the_future_means_the_clock_jumped_back(tmp_path):
    log = DiskLog(tmp_path)
    log.append(Envelope(new_id(), "tests.tasks:noop", b"", publish_at=time.time() + 7200))
    log.close()
    findings = check_clock(tmp_path, now=time.time() - 3600)
    assert any(f.level == "problem" and "in the future" in f.message for f in findings)
    assert not any(f.level == "problem" for f in check_clock(tmp_path))
