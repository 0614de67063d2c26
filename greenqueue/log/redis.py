"""The Redis backend: one log (and queue) shared by every process that names the same URL.

Keys, all under one hash tag ``{prefix}`` (default ``greenqueue``; ``?prefix=`` in the URL) so
that a Redis Cluster keeps them on one slot and the scripts stay atomic:

- ``tasks``   hash  id -> packed envelope (Envelope.pack): the truth about a pending task;
- ``ready``   zset  id by ``-priority * 2**32 + seq``: ZPOPMIN gives the highest priority,
  then the oldest (seq is a counter taken mod 2**32: FIFO holds within 4 billion tasks);
- ``delayed`` zset  id by due time (epoch seconds), moved to ``ready`` when due;
- ``claimed`` zset  id by lease deadline (server clock), ``owner`` hash id -> claimer;
- ``crashed`` set   ids whose lease ran out: the attempt was counted (its packed ``attempt``
  field was bumped in place) and the next claimer checks it against ``max_retries``;
- ``dead`` / ``errors`` hashes: the dead set (packed envelope, error as JSON);
- ``wake``    list  one token when work may be waiting: idle fetchers BLPOP it, so they block
  on the server instead of polling, and the claimer that leaves work behind passes it on;
- ``leader``  string the scheduler leader's name, expiring after ``lease`` unless renewed;
  ``state`` string its JSON record;
- ``unique``  hash  unique key -> id of the pending task holding it, ``unique_of`` id -> key,
  ``unique_until`` key -> when it stops holding (``unique_for``); a task's key goes when the
  task is removed or buried, in the same script.

Every move between these keys is one Lua script (registered once; EVALSHA afterwards), so a
crash between two commands cannot lose a task or run it twice. Time comes from the server
(``TIME``) so that the hosts' clocks do not have to agree for leases. Durability is Redis's:
with ``appendonly yes`` (fsync every second) an acknowledged enqueue survives a server crash
but the last second; without AOF, a server restart loses everything.
"""
import json
import os
import socket
import urllib.parse
from secrets import token_hex

from ..errors import ConfigError
from . import DeadTask
from .shared import MAX_BATCH, SharedLog
from ..envelope import unpack

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # check_backend names the extra first; this is the fallback
    raise ConfigError("the Redis backend needs redis-py: pip install 'greenqueue[redis]'"
                      ) from exc

KEYS = ("tasks", "ready", "delayed", "claimed", "owner", "crashed", "dead", "errors", "seq",
        "wake", "leader", "state", "unique", "unique_of", "unique_until")
WAKE, LEADER, STATE = 9, 10, 11

_PRELUDE = """
local tasks, ready, delayed, claimed, owner, crashed, dead, errors, seq, wake, leader, state,
  unique, unique_of, unique_until = unpack(KEYS)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local function to_ready(id, priority)
  local n = redis.call('INCR', seq) % 4294967296
  redis.call('ZADD', ready, -priority * 4294967296 + n, id)
end
local function forget(id)
  redis.call('ZREM', ready, id); redis.call('ZREM', delayed, id)
  redis.call('ZREM', claimed, id); redis.call('HDEL', owner, id); redis.call('SREM', crashed, id)
end
-- store a task as pending; true if it may wake an idle fetcher
local function add(id, packed, due, priority)
  redis.call('HDEL', dead, id); redis.call('HDEL', errors, id)
  redis.call('HSET', tasks, id, packed)
  if due > now then
    local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    redis.call('ZADD', delayed, due, id)
    return first[2] == nil or due < tonumber(first[2])
  end
  to_ready(id, priority)
  return true
end
-- the task is gone (done, purged or dead): its unique key, if it holds one, goes with it
local function release(id)
  local key = redis.call('HGET', unique_of, id)
  if key then
    redis.call('HDEL', unique_of, id)
    if redis.call('HGET', unique, key) == id then
      redis.call('HDEL', unique, key); redis.call('HDEL', unique_until, key)
    end
  end
end
"""

# ARGV: a flat list of operations, applied in order:
#   R id | B id packed error_json | A id packed due_at priority
SEND = _PRELUDE + """
local i, woke = 1, false
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  forget(id)
  if op == 'R' then
    redis.call('HDEL', tasks, id); redis.call('HDEL', dead, id); redis.call('HDEL', errors, id)
    release(id)
    i = i + 2
  elseif op == 'B' then
    redis.call('HDEL', tasks, id)
    redis.call('HSET', dead, id, ARGV[i + 2]); redis.call('HSET', errors, id, ARGV[i + 3])
    release(id)
    i = i + 4
  else
    if add(id, ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])) then woke = true end
    i = i + 5
  end
end
if woke and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return 1
"""

# ARGV: key, seconds the key holds ('' for as long as the task), id, packed, due_at, priority.
# Stores the task holding ``key`` unless a pending task holds it (and has not outlived its
# seconds): then returns that task's id and stores nothing.
APPEND_UNIQUE = _PRELUDE + """
local key, id = ARGV[1], ARGV[3]
local holder = redis.call('HGET', unique, key)
if holder and holder ~= id and redis.call('HEXISTS', tasks, holder) == 1 then
  local untill = redis.call('HGET', unique_until, key)
  if not untill or tonumber(untill) > now then return holder end
end
if holder and holder ~= id then redis.call('HDEL', unique_of, holder) end
redis.call('HSET', unique, key, id); redis.call('HSET', unique_of, id, key)
if ARGV[2] == '' then
  redis.call('HDEL', unique_until, key)
else
  redis.call('HSET', unique_until, key, now + tonumber(ARGV[2]))
end
forget(id)
if add(id, ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])) and redis.call('LLEN', wake) == 0 then
  redis.call('RPUSH', wake, 1)
end
return false
"""

# ARGV: limit, owner, lease. Returns {packed, crashed, packed, crashed, ...}, seconds until
# the next delayed task is due or the next lease runs out ('' if none).
CLAIM = _PRELUDE + """
for _, id in ipairs(redis.call('ZRANGEBYSCORE', claimed, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', claimed, id); redis.call('HDEL', owner, id)
  local env = redis.call('HGET', tasks, id)
  if env then
    local attempt = struct.unpack('<I4', env, 21)
    env = string.sub(env, 1, 20) .. struct.pack('<I4', attempt + 1) .. string.sub(env, 25)
    redis.call('HSET', tasks, id, env); redis.call('SADD', crashed, id)
    to_ready(id, struct.unpack('<i4', env, 17))
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', delayed, id)
  local env = redis.call('HGET', tasks, id)
  if env then to_ready(id, struct.unpack('<i4', env, 17)) end
end
local out, limit = {}, tonumber(ARGV[1])
if limit > 0 then
  local popped = redis.call('ZPOPMIN', ready, limit)
  local deadline = now + tonumber(ARGV[3])
  for j = 1, #popped, 2 do
    local id = popped[j]
    local env = redis.call('HGET', tasks, id)
    if env then
      redis.call('ZADD', claimed, deadline, id); redis.call('HSET', owner, id, ARGV[2])
      out[#out + 1] = env; out[#out + 1] = redis.call('SISMEMBER', crashed, id)
    end
  end
end
if redis.call('ZCARD', ready) > 0 and redis.call('LLEN', wake) == 0 then
  redis.call('RPUSH', wake, 1)
end
local soonest = nil
for _, key in ipairs({delayed, claimed}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] and (soonest == nil or tonumber(first[2]) < soonest) then
    soonest = tonumber(first[2])
  end
end
return {out, soonest and tostring(soonest - now) or ''}
"""

# KEYS: claimed, owner. ARGV: owner, lease, ids... Returns the ids no longer ours.
RENEW = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""


def parse_url(url):
    """(the URL without our ``prefix`` option, the prefix, where-for-messages sans password)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    prefix = query.pop("prefix", ["greenqueue"])[-1]
    plain = urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True)))
    port = f":{parts.port}" if parts.scheme != "unix" and parts.port else ""
    return plain, prefix, f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


# KEYS: leader. ARGV: owner, lease in ms. 1 if the caller leads (now or still).
LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLog(SharedLog):
    connection_errors = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url, lease=30.0, retry_for=1.0, **_ignored):
        super().__init__(url, lease, retry_for)
        try:
            plain_url, self.prefix, self.where = parse_url(url)
        except ValueError as exc:
            raise ConfigError(f"malformed Redis URL: {exc}") from exc
        prefix = self.prefix
        self.keys = [f"{{{prefix}}}:{name}" for name in KEYS]
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{token_hex(4)}"
        options = dict(socket_connect_timeout=2.0, socket_timeout=5.0,
                       retry=Retry(NoBackoff(), 0), health_check_interval=30)
        try:
            self.claimer = redis.Redis.from_url(plain_url, **options)  # the fetcher's claims
            # BLPOP holds its connection for up to a second: a client of its own, so that a
            # waiting fetcher never takes a connection an enqueue needs
            self.blocking = redis.Redis.from_url(plain_url, **options)
        except ValueError as exc:
            raise ConfigError(f"malformed Redis URL ({self.where}): {exc}") from exc
        try:
            self.claimer.ping()
            # writes and reads take turns (SharedLog._sending): one connection of their own
            # spares the pool's per-command checks (a poll of the socket: about 40 % of an
            # enqueue's client time). It connects at once.
            self.client = redis.Redis.from_url(plain_url, single_connection_client=True,
                                               **options)
        except (redis.RedisError, OSError) as exc:
            self._close()
            raise ConfigError(f"cannot reach Redis at {self.where}: {exc}") from exc
        self._send_script = self.client.register_script(SEND)
        self._claim_script = self.client.register_script(CLAIM)
        self._renew_script = self.client.register_script(RENEW)
        self._unique_script = self.client.register_script(APPEND_UNIQUE)
        self._lead_script = self.client.register_script(LEAD)
        self._resign_script = self.client.register_script(RESIGN)
        self.next_change = None   # seconds until a delayed task is due or a lease runs out
        self._start_helpers()

    def describe(self):
        return f"Redis at {self.where} (prefix {self.prefix!r})"

    # -- SharedLog's server half ---------------------------------------------------------------

    def _send(self, ops, envs):
        chunks, args = [], []
        for op in ops:
            if op[0] == "remove":
                args += ("R", op[1])
            else:
                args += ("B", op[1].id, op[1].pack(), json.dumps(op[2]))
            if len(args) >= 2 * MAX_BATCH:  # keep one script call short: Redis waits for it
                chunks.append(args)
                args = []
        for env in envs:
            args += ("A", env.id, env.pack(), repr(env.publish_at), env.priority)
        if not chunks:
            return self._send_script(self.keys, args)
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks + [args]:
            self._send_script(self.keys, chunk, client=pipe)
        return pipe.execute()

    def _append_unique(self, env, key, unique_for):
        holder = self._unique_script(self.keys, [
            key, "" if unique_for is None else repr(float(unique_for)),
            env.id, env.pack(), repr(env.publish_at), env.priority])
        return holder.decode() if holder else None

    def _claim(self, limit):
        claimed, soonest = self._claim_script(self.keys, [limit, self.owner, self.lease],
                                              client=self.claimer)
        self.next_change = float(soonest) if soonest else None
        return [(claimed[i], claimed[i + 1]) for i in range(0, len(claimed), 2)]

    def _renew(self, ids):
        lost = self._renew_script(self.keys[3:5], [self.owner, self.lease, *ids])
        return [task_id.decode() for task_id in lost]

    def wait(self, timeout):
        """Block on the server (BLPOP on the wake list) until work may be there."""
        self.blocking.blpop([self.keys[WAKE]], timeout=max(0.01, timeout))

    def reconnect(self):
        for client in (self.client, self.claimer, self.blocking):
            client.connection_pool.reset()
        if self.client.connection is not None:  # the single connection is not the pool's
            self.client.connection.disconnect()

    def _close(self):
        for client in (getattr(self, "client", None), getattr(self, "claimer", None),
                       getattr(self, "blocking", None)):
            if client is not None:
                client.close()
                client.connection_pool.disconnect()

    # -- reading ----------------------------------------------------------------------------

    def pending(self):
        return [unpack(packed) for packed in self._read(self.client.hvals, self.keys[0])]

    def _lead(self):
        return self._lead_script([self.keys[LEADER]], [self.owner, int(self.lease * 1000)])

    def _resign(self):
        self._resign_script([self.keys[LEADER]], [self.owner])

    def _load_state(self):
        return self.client.get(self.keys[STATE])

    def _save_state(self, data):
        self.client.set(self.keys[STATE], data)

    def _delayed(self, limit):
        # due tasks not yet moved to ``ready`` (no claim came since) are not delayed any more
        now = self.client.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.zcount(self.keys[2], f"({now[0] + now[1] / 1e6!r}", "+inf")
        pipe.zrangebyscore(self.keys[2], f"({now[0] + now[1] / 1e6!r}", "+inf", 0, limit)
        total, ids = pipe.execute()
        packed = self.client.hmget(self.keys[0], ids) if ids else []
        return total, [p for p in packed if p is not None]

    def _holds(self, task_id):
        return bool(self.client.hexists(self.keys[0], task_id))

    def dead(self):
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys[6])
        pipe.hgetall(self.keys[7])
        envs, errors = self._read(pipe.execute)
        return [DeadTask(unpack(packed), json.loads(errors.get(task_id, b"{}")))
                for task_id, packed in envs.items()]

    def drop_all(self):
        """Delete every key of this prefix (tests, and ``greenqueue`` users starting over)."""
        self.client.delete(*self.keys, self._procs_key)

    # -- the cluster's figures (see SharedLog.publish) ------------------------------------------
    # ``procs`` hash: owner -> "<server time seen> <figures JSON>", under the same hash tag.

    @property
    def _procs_key(self):
        return f"{{{self.prefix}}}:procs"

    def _publish(self, data):
        if getattr(self, "_publish_script", None) is None:
            self._publish_script = self.client.register_script(PUBLISH)
            self._cluster_script = self.client.register_script(CLUSTER)
        self._publish_script([self._procs_key], [self.owner, data])

    def _unpublish(self):
        self.client.hdel(self._procs_key, self.owner)

    def _cluster(self, stale_after):
        if getattr(self, "_cluster_script", None) is None:
            self._cluster_script = self.client.register_script(CLUSTER)
        procs, ready, delayed, claimed, dead = self._cluster_script(
            [self._procs_key] + [self.keys[i] for i in (1, 2, 3, 6)], [repr(stale_after)])
        found = [(procs[i].decode(), float(procs[i + 1]), procs[i + 2])
                 for i in range(0, len(procs), 3)]
        return found, {"ready": ready, "delayed": delayed, "in_flight": claimed, "dead": dead,
                       "oldest_ready_age": None}  # ready is ordered by priority, not age


# KEYS: procs. ARGV: owner, figures JSON. Stored with the server's time.
PUBLISH = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] .. '.' .. string.format('%06d', t[2]) .. ' ' .. ARGV[2])
return 1
"""

# KEYS: procs, ready, delayed, claimed, dead. ARGV: seconds after which an entry is stale.
# Returns {{owner, seconds since seen, figures, ...}, ready, delayed, claimed, dead}; deletes
# the stale entries. Due tasks still in ``delayed`` (moved at the next claim) count as ready.
CLUSTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local procs = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #procs, 2 do
  local value = procs[i + 1]
  local space = string.find(value, ' ', 1, true)
  local seen = space and tonumber(string.sub(value, 1, space - 1))
  if seen == nil or now - seen > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], procs[i])
  else
    out[#out + 1] = procs[i]; out[#out + 1] = tostring(now - seen)
    out[#out + 1] = string.sub(value, space + 1)
  end
end
local due = redis.call('ZCOUNT', KEYS[3], '-inf', now)
return {out, redis.call('ZCARD', KEYS[2]) + due, redis.call('ZCARD', KEYS[3]) - due,
        redis.call('ZCARD', KEYS[4]), redis.call('HLEN', KEYS[5])}
"""
