"""Read a data directory (or one segment) without owning it: for `greenqueue log inspect`
and for `greenqueue stats` when no process is running.

Nothing here writes or locks: a live process may be appending while we read, so the last
record of its segment may look torn; that is reported like any tail.
"""
import os
import time

from ..envelope import packed_publish_at
from .disk import segment_paths
from .format import KIND_NAMES, State, scan


def summarize(path, secret=None):
    """Segments, record counts by kind, and pending / delayed / dead / crashed counts."""
    path = os.fspath(path)
    paths = [path] if os.path.isfile(path) else segment_paths(path)
    state = State()
    segments = []
    for segment in paths:
        try:
            with open(segment, "rb") as f:
                data = f.read()
        except OSError as exc:
            segments.append({"path": segment, "error": str(exc)})
            continue
        before = dict(state.counts)
        result = scan(data, secret, state.apply)
        info = result.info
        segments.append({
            "path": segment, "bytes": len(data),
            "version": info.version if info else None,
            "signed": info.mac if info else None,
            "generation": info.seq if info else None,
            "created_at": info.created_at if info else None,
            "records": {KIND_NAMES[k]: state.counts[k] - before[k] for k in KIND_NAMES},
            "refused": result.refused,
            "damage": [{"offset": d.offset, "bytes": d.length,
                        "kind": ("zero-filled tail" if d.zeros else "torn tail") if d.tail
                        else "corrupt"} for d in result.damage],
        })
    now = time.time()
    pending = list(state.pending.values())
    delayed = sum(1 for packed in pending if packed_publish_at(packed) > now)
    return {
        "path": os.path.abspath(path),
        "segments": segments,
        "bytes": sum(s.get("bytes", 0) for s in segments),
        "records": {KIND_NAMES[k]: n for k, n in state.counts.items()},
        "pending": len(pending) - delayed,
        "delayed": delayed,
        "dead": len(state.dead),
        "in_flight_at_crash": len(state.begun),
        "corrupt": sum(len([d for d in s.get("damage", []) if d["kind"] == "corrupt"])
                       for s in segments),
        "refused": sum(s.get("refused", 0) for s in segments),
    }
