"""The disk log's bytes: segment headers, record frames, and a scanner that survives damage.

See FORMAT.md beside this file for the layout. Everything here is pure (bytes in, values out)
so that ``disk.py`` (files, locks, fsync) and ``inspect.py`` (reporting) share one reader.
"""
import hmac
import json
import struct
import zlib
from dataclasses import dataclass, field

from ..envelope import FIXED_SIZE, unpack

VERSION = 1
SEGMENT_MAGIC = b"GQLOG"
RECORD_MAGIC = 0xA7
FLAG_MAC = 1

ADD, BEGIN, REMOVE, BURY = 1, 2, 3, 4
KIND_NAMES = {ADD: "add", BEGIN: "begin", REMOVE: "remove", BURY: "bury"}

_header = struct.Struct("<5sBB16sId")          # magic, version, flags, chain, seq, created_at
HEADER_SIZE = _header.size + 4                 # + crc32 of the above
_frame = struct.Struct("<BBII")                # magic, kind, body length, crc32
FRAME_SIZE = _frame.size
_bury = struct.Struct("<IH")                   # attempt, id length; then id, error JSON
MAC_SIZE = 32
NOW = bytes(8)   # a packed envelope starts with publish_at; 0.0 ("run now") packs to 8 zeros
MAX_BODY = 1 << 30

_pack_frame = _frame.pack
_crc32 = zlib.crc32


def segment_header(chain, seq, created_at, mac):
    head = _header.pack(SEGMENT_MAGIC, VERSION, FLAG_MAC if mac else 0,
                        chain.encode().ljust(16, b"\0")[:16], seq, created_at)
    return head + struct.pack("<I", _crc32(head))


@dataclass
class SegmentInfo:
    version: int
    mac: bool
    chain: str
    seq: int
    created_at: float


def read_header(data):
    """Parse a segment header; None when it is missing, torn or corrupt."""
    if len(data) < HEADER_SIZE:
        return None
    head = bytes(data[:_header.size])
    (crc,) = struct.unpack_from("<I", data, _header.size)
    if _crc32(head) != crc:
        return None
    magic, version, flags, chain, seq, created_at = _header.unpack(head)
    if magic != SEGMENT_MAGIC:
        return None
    return SegmentInfo(version, bool(flags & FLAG_MAC), chain.rstrip(b"\0").decode(), seq,
                       created_at)


class Framer:
    """Builds record frames, signing them when a secret is set (HMAC-SHA256)."""

    def __init__(self, secret=None):
        if isinstance(secret, str):
            secret = secret.encode()
        self.secret = secret

    def frame(self, kind, body):
        if self.secret is not None:
            body += hmac.digest(self.secret, bytes((kind,)) + body, "sha256")
        return _pack_frame(RECORD_MAGIC, kind, len(body), _crc32(body, kind)) + body

    def add(self, env):
        """An add record: its body is the packed envelope (envelope.Envelope.pack)."""
        return self.add_packed(env.pack())

    def add_packed(self, body):
        if self.secret is None:  # the hot path
            return _pack_frame(RECORD_MAGIC, ADD, len(body), _crc32(body, ADD)) + body
        return self.frame(ADD, body)

    def ids(self, kind, ids):
        return self.frame(kind, " ".join(ids).encode())

    def bury(self, env, error):
        id_ = env.id.encode()
        return self.frame(BURY, _bury.pack(env.attempt, len(id_)) + id_ +
                          json.dumps(error, default=str).encode())


@dataclass
class Damage:
    """A stretch of a segment that held no valid record."""

    offset: int
    length: int
    tail: bool          # at the end of the segment (torn write): the log's end, not an error
    zeros: bool         # nothing but zero bytes (a preallocated or zero-filled tail)


@dataclass
class Scan:
    """What one segment held: its header, how many records, the damage met on the way."""

    info: SegmentInfo = None
    records: int = 0
    damage: list = field(default_factory=list)
    refused: int = 0                                # records whose MAC did not verify


def scan(data, secret=None, sink=None):
    """Feed every intact record of a segment's bytes to ``sink(kind, body, offset)``.

    A record is intact when its magic, length and CRC hold (and its MAC, when the segment
    is signed or a secret is set: with a secret, unsigned records are refused). After damage
    the scanner looks for the next record that verifies, so one bad record never hides the
    ones after it. ``data`` must be ``bytes``.
    """
    result = Scan(info=read_header(data))
    if result.info is None:
        if any(data):
            result.damage.append(Damage(0, len(data), True, False))
        return result
    if isinstance(secret, str):
        secret = secret.encode()
    signed = result.info.mac or secret is not None
    end = len(data)
    pos = HEADER_SIZE
    unpack = _frame.unpack_from
    bad_start = None
    count = 0
    while pos < end:
        ok = False
        if end - pos >= FRAME_SIZE:
            magic, kind, length, crc = unpack(data, pos)
            body = pos + FRAME_SIZE
            body_end = body + length
            if magic == RECORD_MAGIC and kind in KIND_NAMES and body_end <= end:
                chunk = data[body:body_end]   # the one copy replay makes of a record
                ok = _crc32(chunk, kind) == crc
        if not ok:
            if bad_start is None:
                bad_start = pos
            nxt = data.find(_RECORD_MAGIC_BYTE, pos + 1)
            pos = end if nxt < 0 else nxt
            continue
        if bad_start is not None:
            result.damage.append(_damage(data, bad_start, pos, False))
            bad_start = None
        pos = body_end
        if signed:
            chunk, mac = chunk[:-MAC_SIZE], chunk[-MAC_SIZE:]
            if secret is None or not result.info.mac or len(mac) < MAC_SIZE or \
                    not hmac.compare_digest(hmac.digest(secret, bytes((kind,)) + chunk,
                                                        "sha256"), mac):
                result.refused += 1
                continue
        count += 1
        if sink is not None:
            sink(kind, chunk, pos - FRAME_SIZE - length)
    if bad_start is not None:
        result.damage.append(_damage(data, bad_start, end, True))
    result.records = count
    return result


_RECORD_MAGIC_BYTE = bytes((RECORD_MAGIC,))


def _damage(data, start, stop, tail):
    return Damage(start, stop - start, tail, not any(data[start:stop]))


def decode_add(body):
    return unpack(body)


def decode_ids(body):
    return body.decode("ascii").split(" ") if body else []


def decode_bury(body):
    attempt, id_len = _bury.unpack_from(body)
    start = _bury.size
    task_id = body[start:start + id_len].decode("ascii")
    try:
        error = json.loads(body[start + id_len:])
    except ValueError:
        error = {"type": "?", "message": "unreadable error record", "traceback": ""}
    return task_id, attempt, error


class State:
    """The log's meaning: per task id, the latest fact wins (see greenqueue/log/__init__.py).

    ``pending`` maps id -> packed envelope (bytes: cheap to hold, invisible to the garbage
    collector), ``begun`` holds ids whose last fact is an attempt start, ``dead`` maps
    id -> (Envelope, error). Replay feeds records in log order through ``apply``.
    """

    def __init__(self):
        self.pending = {}
        self.begun = set()
        self.dead = {}
        self.counts = dict.fromkeys(KIND_NAMES, 0)   # kind -> records seen
        self.immediate = 0                            # pending entries added as "run now"

    def apply(self, kind, body, offset=None):
        """Take one record's body into the state (its offset is for other readers)."""
        self.counts[kind] += 1
        if kind == ADD:  # the body is a packed envelope; its id, read inline: replay's hot spot
            id_len = body[FIXED_SIZE - 4] | body[FIXED_SIZE - 3] << 8
            task_id = body[FIXED_SIZE:FIXED_SIZE + id_len].decode("ascii")
            old = self.pending.get(task_id)
            if old is not None and old.startswith(NOW):
                self.immediate -= 1
            if body.startswith(NOW):
                self.immediate += 1
            self.pending[task_id] = body
            if self.begun:
                self.begun.discard(task_id)
            if self.dead:
                self.dead.pop(task_id, None)
        elif kind == BEGIN:
            pending = self.pending
            self.begun.update(i for i in decode_ids(body) if i in pending)
        elif kind == REMOVE:
            pending, dead, begun = self.pending, self.dead, self.begun
            for task_id in decode_ids(body):
                old = pending.pop(task_id, None)
                if old is None:
                    dead.pop(task_id, None)
                elif old.startswith(NOW):
                    self.immediate -= 1
                begun.discard(task_id)
        elif kind == BURY:
            task_id, attempt, error = decode_bury(body)
            packed = self.pending.pop(task_id, None)
            if packed is not None and packed.startswith(NOW):
                self.immediate -= 1
            env = unpack(packed) if packed is not None else (self.dead.get(task_id) or (None,))[0]
            self.begun.discard(task_id)
            if env is not None:
                self.dead[task_id] = (env.replace(attempt=attempt), error)

    def crashed(self):
        """Count the attempts cut short by a crash; return their ids."""
        for task_id in self.begun:
            env = unpack(self.pending[task_id])
            self.pending[task_id] = env.replace(attempt=env.attempt + 1).pack()
        return set(self.begun)
