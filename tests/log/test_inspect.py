"""`greenqueue log inspect` on a real data directory, through the installed command."""
import json
import os
import subprocess
import sys

from greenqueue.log.disk import DiskLog, segment_paths
from tests.log.helpers import abandon, envelope

GREENQUEUE = os.path.join(os.path.dirname(sys.executable), "greenqueue")


def make_log(path):
    log = DiskLog(path)
    a, b, c = envelope(), envelope(publish_at=4e9), envelope()
    for env in (a, b, c):
        log.append(env)
    log.bury(c.replace(attempt=6), {"type": "E", "message": "m", "traceback": ""})
    abandon(log)


def test_inspect_json_counts_kinds_tasks_and_damage(tmp_path):
    path = tmp_path / "data"
    make_log(path)
    with open(segment_paths(path)[0], "ab") as f:
        f.write(b"\xa7\x01garbage")
    out = subprocess.run([GREENQUEUE, "log", "inspect", str(path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["records"] == {"add": 3, "begin": 0, "remove": 0, "bury": 1}
    assert (report["pending"], report["delayed"], report["dead"]) == (1, 1, 1)
    (segment,) = report["segments"]
    assert segment["version"] == 1 and segment["damage"][0]["kind"] == "torn tail"


def test_inspect_text_names_segments(tmp_path):
    path = tmp_path / "data"
    make_log(path)
    out = subprocess.run([GREENQUEUE, "log", "inspect", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert segment_paths(path)[0] in out
    assert "1 pending, 1 delayed, 1 dead" in out
