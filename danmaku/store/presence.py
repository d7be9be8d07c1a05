"""Who is in a room and which history its frames belong to: the Redis side of the
gateways' presence reports, the room-wide head count, and the room's history epoch.

Head count (``rules.headcount`` decides what a gateway reports): ``online`` counts
distinct users over all live gateways plus anonymous connections. One Lua script per
room (``ONLINE``) reads the gateways' fresh reports (``keys.online``), unions the exact
user lists (``keys.who``) and, when some gateway counts by HyperLogLog, merges those
lists into the union of the current and previous bucket (``keys.who_hll``). Every key
carries the room's hash tag, so it runs the same on a Redis Cluster.

Epoch: a short random string in the room's ``meta`` hash. Whoever first reads the room
and finds none sets one (``EPOCH``: ``HSETNX``, so concurrent readers agree); the hash is
only ever lost as a whole (a reset, a flush, data lost with a failover), so the epoch
changes exactly when the numbering of frames may start again. The commit of frame 1
(``scripts.COMMIT``) drops any frames left from an earlier era, so a history never mixes
two numberings, and keeps the hash for good (until then it expires a minute after the
room was last looked at: a room with no frames has no history to resume).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from danmaku.rules.headcount import HLL_BUCKET_MS, LocalViewers, hll_bucket
from danmaku.store import keys
from danmaku.store.records import ONLINE_FRESH_MS, _s

PRESENCE_TTL_MS = 60_000  # the reports' keys outlive a gateway that vanished this long
PFADD_CHUNK = 1000  # uids per PFADD (a command's arguments stay small)

# The head count of one room. KEYS: online, who, who_hll(bucket), who_hll(bucket - 1),
# who_tmp. ARGV: now_ms, fresh_ms. Returns {online, connections, distinct users}.
# Reports older than fresh_ms (a gateway that died) are skipped; a report without a mode
# (a gateway of an older version, ``count:stamp``) counts its connections as anonymous.
ONLINE = """
local now, fresh = tonumber(ARGV[1]), tonumber(ARGV[2])
local reports = redis.call('HGETALL', KEYS[1])
local conns, anon, hll, listed = 0, 0, false, {}
for i = 1, #reports, 2 do
  local c, stamp, a, mode = string.match(reports[i + 1], '^(%d+):(%d+):?(%d*):?(%a?)$')
  if c and now - tonumber(stamp) <= fresh then
    conns = conns + tonumber(c)
    if mode == '' then anon = anon + tonumber(c) else anon = anon + tonumber(a) end
    if mode == 'h' then hll = true elseif mode == 'e' then listed[#listed + 1] = reports[i] end
  end
end
local seen, users = {}, {}
if #listed > 0 then
  for _, list in ipairs(redis.call('HMGET', KEYS[2], unpack(listed))) do
    if list then
      for uid in string.gmatch(list, '%S+') do
        if not seen[uid] then seen[uid] = true; users[#users + 1] = uid end
      end
    end
  end
end
local n = #users
if hll then
  if n > 0 then
    redis.call('DEL', KEYS[5])
    for i = 1, n, 1000 do
      redis.call('PFADD', KEYS[5], unpack(users, i, math.min(i + 999, n)))
    end
    n = redis.call('PFCOUNT', KEYS[3], KEYS[4], KEYS[5])
    redis.call('DEL', KEYS[5])
  else
    n = redis.call('PFCOUNT', KEYS[3], KEYS[4])
  end
end
return {n + anon, conns, n}
"""


# The room's position and history epoch. KEYS: meta. ARGV: a fresh epoch, ttl_ms. Sets the
# epoch if there is none; a room without frames yet (no ``seq``) keeps its epoch-only
# hash ttl_ms after the last look (gateways look each presence round while it has
# viewers), so room names that never get a comment leave nothing behind; the commit of
# frame 1 makes it permanent (``scripts.COMMIT``). Returns {seq, epoch}.
EPOCH = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
if not m[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return m
"""
EPOCH_ONLY_TTL_MS = PRESENCE_TTL_MS


@dataclass(frozen=True, slots=True)
class Headcount:
    """A room's viewers over all live gateways."""

    online: int  # distinct users plus anonymous connections
    connections: int
    users: int  # distinct users (with a token)


def new_epoch() -> str:
    """A fresh history epoch: 12 of ``[A-Za-z0-9_-]`` (the handshake's ``epoch`` rule)."""
    return secrets.token_urlsafe(9)


def queue_epoch(pipe: Any, script: Any, room: str) -> None:
    """Queue ``EPOCH`` for ``room``: its ``seq`` and ``epoch`` (one reply,
    ``parse_epoch``), giving it an epoch if it has none."""
    names = (keys.meta(room),)
    pipe.evalsha(script.sha, len(names), *names, new_epoch(), EPOCH_ONLY_TTL_MS)


def parse_epoch(reply: Any) -> tuple[int, str]:
    """``(seq, epoch)`` from the reply of ``queue_epoch``."""
    seq, epoch = reply
    return int(seq or 0), _s(epoch) if epoch else ""


def queue_online(pipe: Any, script: Any, room: str, now_ms: int) -> None:
    """Queue the head count of ``room`` (one reply; ``parse_online``)."""
    bucket = hll_bucket(now_ms)
    names = (
        keys.online(room),
        keys.who(room),
        keys.who_hll(room, bucket),
        keys.who_hll(room, bucket - 1),
        keys.who_tmp(room),
    )
    # EVALSHA as core.queue_script does; StoreCore.execute_scripted loads it if needed.
    pipe.evalsha(script.sha, len(names), *names, now_ms, ONLINE_FRESH_MS)


def parse_online(reply: Any) -> Headcount:
    online, conns, users = (int(x) for x in reply)
    return Headcount(online, conns, users)


def queue_report(
    pipe: Any, room: str, gateway_id: str, report: LocalViewers | None, now_ms: int
) -> None:
    """Queue one gateway's presence report for ``room`` (``None``: it has no viewers
    there any more)."""
    online, who = keys.online(room), keys.who(room)
    if report is None or report.conns <= 0:
        pipe.hdel(online, gateway_id)
        pipe.hdel(who, gateway_id)
        return
    mode = "h" if report.hll else "e"
    pipe.hset(online, gateway_id, f"{report.conns}:{now_ms}:{report.anonymous}:{mode}")
    pipe.pexpire(online, PRESENCE_TTL_MS)
    if report.hll:
        pipe.hdel(who, gateway_id)
        if report.hll_add:
            hll = keys.who_hll(room, report.bucket)
            for i in range(0, len(report.hll_add), PFADD_CHUNK):
                pipe.pfadd(hll, *report.hll_add[i : i + PFADD_CHUNK])
            # Readers count this bucket and the next one's previous: three buckets' life.
            pipe.pexpire(hll, 3 * HLL_BUCKET_MS)
    elif report.users is not None:
        pipe.hset(who, gateway_id, " ".join(report.users))
    pipe.pexpire(who, PRESENCE_TTL_MS)
