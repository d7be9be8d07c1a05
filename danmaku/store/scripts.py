"""Lua scripts. Each touches only keys of one room (one hash slot), so all are
Cluster-safe; each is atomic, which is what makes the guarantees below hold.
"""

from __future__ import annotations

# Admit and append a batch of one room's comments: the door of the room, in one atomic
# step per batch (no per-comment round trip). Its executable spec is rules.door.DoorModel
# (tests/integration/test_door_conformance.py holds the two to the same answers): change
# a rule there first. Per comment, in order:
#   1. resend: the (user, nonce) was stored within the nonce TTL, among the user's last
#      NONCE_RING comments in the room -> "=" .. its id, nothing appended;
#   2. staff: only their own token bucket (staff rate/s, staff burst; rate 0 = none) ->
#      "!rate_limited:ms" (ratelimit.DoorBuckets is the model); a generous limit, but a
#      limit: a staff sender (or a leaked moderator token) cannot flood the room;
#      unless staff: banned or timed out -> "!banned:ms" (0 = permanent); room muted and
#      not highlighted -> "!muted:0";
#      duplicate text from the same user within the window -> "!duplicate:ms";
#      slow mode on (room setting) -> one comment per slow_mode_s -> "!slow_mode:ms";
#      otherwise the user's token bucket (rate/s, burst) -> "!rate_limited:ms";
#      (the bucket is ratelimit.take_tokens, step for step; time comes from Redis TIME so
#      gateway clocks do not matter, and the state is shared by every gateway);
#   3. keep it: a new comment id; remember the nonce, charge the limits -> the id;
#   4. or hold it for review (DoorModel's rule 8, over rules/review.hold_reason): the
#      room's ``review`` setting (0 off, 1 suspicious, 2 all) is on and the sender is
#      neither staff nor highlighted (by token, or granted in KEYS[4]), and it is
#      ``all``, or the gateway flagged the text ("r": a review word or a link), or the
#      sender's first kept or held comment in the room is less than
#      ``first_chat_min`` minutes old -> "?h" .. n (a held id), the comment goes to the
#      room's review queue (KEYS[10] hash id -> payload, KEYS[11] zset id -> ms), not the
#      stream; a full queue -> "!review_full:ms"; a resend of a held comment -> "=?h" .. n
#      (its nonce slot keeps the held number with bit 31 set).
# When a user's comment is kept or held, the first time the door sees the user (KEYS[9]:
# uid -> ms of the first) is noted: read for users with no state here (and for everyone
# while first-time chatters are held), written only for new ones.
# Redis CPU is what bounds a room's comments/s (a room lives on one shard), so the
# script's cost is per batch wherever it can be (measured by loadtest/doorbench.py):
# - Kept comments go into the stream packed, up to ENTRY_MAX per entry ("\n"-joined
#   payloads under field "d"; JSON has no raw newline): one XADD per entry, not per
#   comment. The script mints the ids itself: an entry's id is its first comment's id
#   and the others follow in sequence (ms-s, ms-(s+1), ...), so every comment keeps an
#   "ms-seq" id, ordered, and readers split entries back (records.split_entry). The last
#   id minted is kept in the room's door hash (KEYS[7]); without it (a stream written
#   before it existed), the stream's last entry says.
# - Every user's state in the room is one field of one hash (KEYS[5]): read for the
#   whole batch with one HMGET, written back with one HSET. The hash is one generation:
#   when it is older than keep_ms it becomes the old generation (KEYS[6], read for users
#   not in the new one) and the older one is dropped, so memory holds the users of the
#   last two windows and a user's state lives at least keep_ms after its last change.
#   The state, fixed-width binary (Lua strings cost by the byte here, ~1.5 ns each, so
#   it is small, read in place and built once per user per batch; no number formatting):
#   the bucket's tokens, its time and the last accepted time (struct '<ddd', last -1 =
#   never), the nonce list's length in bytes ('<H'), then two rings, newest first, of at
#   most NONCE_RING slots each: nonces (8-byte door_key of the nonce, the id as '<I6I4'
#   ms and seq: 18 bytes) and texts (8-byte door_key of the normalised text, expiry ms
#   '<I6': 14 bytes). A slot found at an offset that is not a slot boundary is no match.
# - Bans are read with one HMGET for the whole batch; staff buckets (KEYS[8], uid ->
#   struct '<dd' tokens and time) with one HMGET, only when the batch has staff comments.
# - The door hash also counts the comments stored (``n``; deletes take one off).
# KEYS[1] = comment stream, KEYS[2] = room settings hash, KEYS[3] = bans hash,
#   KEYS[4] = highlighted uids (granted by moderators: may speak in a muted room),
#   KEYS[5] = users (this generation), KEYS[6] = users (the last one), KEYS[7] = door hash,
#   KEYS[8] = staff buckets, KEYS[9] = first comments (uid -> ms), KEYS[10] = held
#   comments (id -> payload), KEYS[11] = the review queue (id -> ms held)
# ARGV[1] = MAXLEN (comments, ~), ARGV[2] = nonce TTL s, ARGV[3] = rate/s, ARGV[4] = burst,
#   ARGV[5] = duplicate window s, ARGV[6] = staff rate/s (0 = unlimited), ARGV[7] = staff
#   burst, ARGV[8] = first_chat_min default, ARGV[9] = review queue max, ARGV[10] = held
#   item lifetime s, ARGV[11] = first-comment record lifetime s, ARGV[12] = the clock in
#   ms ("" = Redis TIME: always, but for the conformance suite), then per comment: uid,
#   payload, flags ("s" = staff, "h" = highlighted, "-" = ordinary, "r" = ordinary and
#   flagged for review), door_key(nonce), door_key(normalised text)
NONCE_RING = 32  # at least a connection's unacked comments (32): what a client resends
ENTRY_MAX = 16  # comments per stream entry: what one read of N entries can hold is bounded
INGEST = r"""
local now_ms = tonumber(ARGV[12])  -- a given clock (the conformance suite), else TIME
if not now_ms then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now = now_ms / 1000
local set = redis.call('HMGET', KEYS[2], 'slow_mode_s', 'mute', 'review', 'first_chat_min')
local slow = tonumber(set[1] or '0') or 0
local muted = (tonumber(set[2] or '0') or 0) > 0
local review = tonumber(set[3] or '0') or 0
local first_ms = (tonumber(set[4] or ARGV[8]) or 0) * 60000
local hold_first = review == 1 and first_ms > 0
local nonce_ttl_ms = tonumber(ARGV[2]) * 1000
local rate, burst, dupwin = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep_ms = math.ceil(math.max(burst / math.max(rate, 1e-6), slow, dupwin,
                                   tonumber(ARGV[2])) * 1000) + 1000
local ENTRY_MAX, RING = @ENTRY_MAX@, @NONCE_RING@
local dup_until_ms = now_ms + math.ceil(dupwin * 1000)
local dup_until = struct.pack('<I6', dup_until_ms)
local srate, sburst = tonumber(ARGV[6]), tonumber(ARGV[7])
-- A token bucket's step (ratelimit.take_tokens): refill to now, take one token, or say
-- how long until one is back. Returns tokens, stamp, verdict (nil: taken).
local function take(tokens, stamp, r, b)
  if now > stamp then
    tokens = math.min(b, tokens + (now - stamp) * r)
    stamp = now
  end
  if tokens + 1e-9 >= 1 then
    return math.max(0, tokens - 1), stamp, nil
  elseif r <= 0 or b < 1 then
    return tokens, stamp, '!rate_limited:3600000'
  end
  return tokens, stamp, '!rate_limited:' .. math.ceil((1 - tokens) / r * 1000)
end
local HEAD = 12
local n = (#ARGV - HEAD) / 5

local door = redis.call('HMGET', KEYS[7], 'id', 'gen', 'avg', 'n', 'held')
local gen = tonumber(door[2] or '0') or 0
if now_ms - gen >= keep_ms then  -- a new generation of user states
  redis.call('UNLINK', KEYS[6])
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('RENAME', KEYS[5], KEYS[6]) end
  gen = now_ms
  redis.call('HSET', KEYS[7], 'gen', gen)
end
local last_id, stored = door[1], tonumber(door[4] or '0') or 0
if not last_id then  -- a stream from before the door hash: ask the stream
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if top then
    local _, lines = string.gsub(top[2][2], '\n', '')
    local ms, sq = string.match(top[1], '^(%d+)-(%d+)$')
    last_id = ms .. '-' .. (tonumber(sq) + lines)
    stored = redis.call('XLEN', KEYS[1])
  end
end
local last_ms, last_seq = 0, -1
if last_id then
  local a, b = string.match(last_id, '^(%d+)-(%d+)$')
  last_ms, last_seq = tonumber(a), tonumber(b)
end
local id_ms, seq = now_ms, 0
if now_ms <= last_ms then id_ms, seq = last_ms, last_seq + 1 end
local prefix = id_ms .. '-'

local uids = {}
for i = 1, n do uids[i] = ARGV[HEAD - 4 + 5 * i] end
local banned, states = {}, {}
local any_bans = redis.call('EXISTS', KEYS[3]) == 1  -- most rooms: none to look up
for first = 1, n, 500 do  -- HMGET in chunks: unpack() has a stack limit
  local last = math.min(n, first + 499)
  local got
  if any_bans then
    got = redis.call('HMGET', KEYS[3], unpack(uids, first, last))
    for j = first, last do banned[j] = got[j - first + 1] end
  end
  got = redis.call('HMGET', KEYS[5], unpack(uids, first, last))
  for j = first, last do states[j] = got[j - first + 1] end
end
if redis.call('EXISTS', KEYS[6]) == 1 then  -- users not seen in this generation
  local miss, at = {}, {}
  for i = 1, n do
    if not states[i] then
      miss[#miss + 1] = uids[i]
      at[#miss] = i
    end
  end
  for first = 1, #miss, 500 do
    local last = math.min(#miss, first + 499)
    local got = redis.call('HMGET', KEYS[6], unpack(miss, first, last))
    for j = first, last do states[at[j]] = got[j - first + 1] end
  end
end

-- First comments: for users the door has no state for (their first is noted already
-- when they have one), and for every ordinary sender while first-time chatters are held.
local firsts, looked = {}, {}
do
  local look, lat = {}, {}
  for i = 1, n do
    if ARGV[HEAD - 2 + 5 * i] ~= 's' and (hold_first or not states[i]) then
      look[#look + 1] = uids[i]
      lat[#look] = i
    end
  end
  for first = 1, #look, 500 do
    local last = math.min(#look, first + 499)
    local got = redis.call('HMGET', KEYS[9], unpack(look, first, last))
    for j = first, last do
      local f = got[j - first + 1]
      firsts[lat[j]] = f and f or nil
      looked[lat[j]] = true
    end
  end
end

-- Staff buckets: read only for the staff of this batch (most batches have none).
local sbuckets, sdirty = {}, {}
if srate > 0 then
  local suids = {}
  for i = 1, n do
    if ARGV[HEAD - 2 + 5 * i] == 's' and not sbuckets[uids[i]] then
      sbuckets[uids[i]] = true
      suids[#suids + 1] = uids[i]
    end
  end
  for first = 1, #suids, 500 do
    local last = math.min(#suids, first + 499)
    local got = redis.call('HMGET', KEYS[8], unpack(suids, first, last))
    for j = first, last do
      local st = got[j - first + 1]
      if st and #st == 16 then
        local tokens, stamp = struct.unpack('<dd', st)
        sbuckets[suids[j]] = {tokens = tokens, stamp = stamp}
      else
        sbuckets[suids[j]] = {tokens = sburst, stamp = now}
      end
    end
  end
end

-- Where an 8-byte key starts a slot of `width` bytes in st[first .. last + width - 1]
-- (`last`: the last slot's start), or nil; a match across two slots is not one.
local function slot(st, key, first, last, width)
  local from = first
  while true do
    local at = string.find(st, key, from, true)
    if not at or at > last then return nil end
    if (at - first) % width == 0 then return at end
    from = at + 1
  end
end

-- A user's state string is read in place (never split): nonces in st[27 .. 26 + ns],
-- dups after them. What a batch adds is kept apart, newest first (`nn`, `nd`: looked up
-- first, for a resend or a duplicate within one batch), and the new state is built once
-- per user: Lua strings cost by the byte, and a state is ~1 KB.
local users, dirty, out, kept = {}, {}, {}, {}
local held, heldq, fresh, queued = {}, {}, {}, nil
local held_n = tonumber(door[5] or '0') or 0
local hold_max, hold_ttl_ms = tonumber(ARGV[9]), tonumber(ARGV[10]) * 1000
local first_keep_ms = tonumber(ARGV[11]) * 1000
local HELD_BIT, REVIEW_RETRY_MS = 2147483648, 5000
local nfresh, now_text = 0, string.format('%d', now_ms)  -- formatted once, not per user
for i = 1, n do
  local a = HEAD - 4 + 5 * i
  local uid, flags, nonce, th = ARGV[a], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local u = users[uid]
  if not u then
    local st = states[i]
    if st and #st >= 26 then
      local tokens, stamp, last, ns = struct.unpack('<dddH', st)
      u = {st = st, ns = ns, tokens = tokens, stamp = stamp, last = last >= 0 and last or nil}
    else
      u = {st = '', ns = 0, tokens = burst, stamp = now}
    end
    if looked[i] then u.looked, u.seen = true, tonumber(firsts[i]) end
    users[uid] = u
  elseif looked[i] and not u.looked then
    u.looked, u.seen = true, tonumber(firsts[i])
  end
  local seen = nil
  local at = u.nn and slot(u.nn, nonce, 1, #u.nn - 17, 18)
  if at then
    local ms, sq = struct.unpack('<I6I4', u.nn, at + 8)
    seen = sq >= HELD_BIT and '?h' .. (sq - HELD_BIT) or ms .. '-' .. sq
  else
    at = slot(u.st, nonce, 27, 26 + u.ns - 17, 18)
    if at then
      local ms, sq = struct.unpack('<I6I4', u.st, at + 8)
      if now_ms - ms < nonce_ttl_ms then
        seen = sq >= HELD_BIT and '?h' .. (sq - HELD_BIT) or ms .. '-' .. sq
      end
    end
  end
  if seen then
    out[i] = '=' .. seen
  else
    local verdict = nil
    local tokens, stamp = u.tokens, u.stamp
    local sb, stokens, sstamp = nil, 0, 0
    if flags == 's' and srate > 0 then  -- the staff bucket: ratelimit.take_tokens
      sb = sbuckets[uid]
      stokens, sstamp, verdict = take(sb.tokens, sb.stamp, srate, sburst)
    elseif flags ~= 's' then
      local ban = banned[i]
      local until_s = ban and (tonumber(ban) or -1) or -1
      local dup_left = 0
      if dupwin > 0 then
        local at = u.nd and slot(u.nd, th, 1, #u.nd - 13, 14)
        if at then
          dup_left = dup_until_ms - now_ms
        else
          at = slot(u.st, th, 27 + u.ns, #u.st - 13, 14)
          if at then dup_left = struct.unpack('<I6', u.st, at + 8) - now_ms end
        end
      end
      if until_s == 0 then
        verdict = '!banned:0'
      elseif until_s > now then
        verdict = '!banned:' .. math.ceil((until_s - now) * 1000)
      elseif muted and flags ~= 'h' and redis.call('SISMEMBER', KEYS[4], uid) == 0 then
        verdict = '!muted:0'
      elseif dup_left > 0 then
        verdict = '!duplicate:' .. math.max(1, math.ceil(dup_left))
      elseif slow > 0 then
        if u.last and u.last + slow > now then
          verdict = '!slow_mode:' .. math.ceil((u.last + slow - now) * 1000)
        end
      else
        tokens, stamp, verdict = take(tokens, stamp, rate, burst)
      end
    end
    local hold = false
    if not verdict and review > 0 and flags ~= 's' and flags ~= 'h' and (review >= 2
        or flags == 'r'
        or (first_ms > 0 and u.looked and now_ms - (u.seen or now_ms) < first_ms))
        and redis.call('SISMEMBER', KEYS[4], uid) == 0 then  -- highlighted by a moderator
      if not queued then  -- once per batch: expired items go, then how many wait
        local old = redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now_ms - hold_ttl_ms,
                               'LIMIT', 0, 500)
        if #old > 0 then
          redis.call('ZREM', KEYS[11], unpack(old))
          redis.call('HDEL', KEYS[10], unpack(old))
        end
        queued = redis.call('ZCARD', KEYS[11])
      end
      if queued >= hold_max then
        verdict = '!review_full:' .. REVIEW_RETRY_MS
      else
        hold, queued = true, queued + 1
      end
    end
    if verdict then
      out[i] = verdict
    else
      if not u.nn then
        u.nn, u.nd = '', ''
        dirty[#dirty + 1] = uid
      end
      if hold then
        held_n = held_n + 1
        local hid = 'h' .. held_n
        held[#held + 1] = hid
        held[#held + 1] = ARGV[a + 1]
        heldq[#heldq + 1] = now_ms
        heldq[#heldq + 1] = hid
        u.nn = nonce .. struct.pack('<I6I4', now_ms, HELD_BIT + held_n) .. u.nn
        out[i] = '?' .. hid
      else
        kept[#kept + 1] = ARGV[a + 1]
        u.nn = nonce .. struct.pack('<I6I4', id_ms, seq) .. u.nn
        out[i] = prefix .. seq
        seq = seq + 1
      end
      if u.looked and not u.seen then
        u.seen = now_ms
        nfresh = nfresh + 2
        fresh[nfresh - 1], fresh[nfresh] = uid, now_text
      end
      if flags ~= 's' then
        u.tokens, u.stamp, u.last = tokens, stamp, now
        if dupwin > 0 then u.nd = th .. dup_until .. u.nd end
      elseif sb then
        if not sb.dirty then
          sb.dirty = true
          sdirty[#sdirty + 1] = uid
        end
        sb.tokens, sb.stamp = stokens, sstamp
      end
    end
  end
end

if #kept > 0 then
  -- The stream is trimmed by entries: MAXLEN comments at the recent entries' mean size.
  local avg = tonumber(door[3] or '1') or 1
  avg = avg + (math.min(#kept, ENTRY_MAX) - avg) / 16
  local maxlen = math.ceil(tonumber(ARGV[1]) / math.max(1, avg))
  local s0 = seq - #kept
  for from = 1, #kept, ENTRY_MAX do
    local to = math.min(#kept, from + ENTRY_MAX - 1)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, prefix .. (s0 + from - 1), 'd',
               table.concat(kept, '\n', from, to))
  end
  redis.call('HSET', KEYS[7], 'id', prefix .. (seq - 1), 'avg', avg, 'n', stored + #kept)
end
if #held > 0 then
  for from = 1, #held, 1000 do
    redis.call('HSET', KEYS[10], unpack(held, from, math.min(#held, from + 999)))
    redis.call('ZADD', KEYS[11], unpack(heldq, from, math.min(#heldq, from + 999)))
  end
  -- an idle queue goes when its newest item would have expired
  redis.call('PEXPIRE', KEYS[10], hold_ttl_ms + 1000)
  redis.call('PEXPIRE', KEYS[11], hold_ttl_ms + 1000)
  redis.call('HSET', KEYS[7], 'held', held_n)
end
if #fresh > 0 then
  for from = 1, #fresh, 1000 do
    redis.call('HSET', KEYS[9], unpack(fresh, from, math.min(#fresh, from + 999)))
  end
  redis.call('PEXPIRE', KEYS[9], first_keep_ms)
end
if #dirty > 0 then
  local f = {}
  for j, uid in ipairs(dirty) do
    local u = users[uid]
    local st, ns, nn, nd = u.st, u.ns, u.nn, u.nd
    -- The new slots, then as many old ones as the ring (RING slots) still holds.
    local keep_n = math.max(0, RING * 18 - #nn)
    local keep_d = math.max(0, RING * 14 - #nd)
    if keep_n == 0 then nn = string.sub(nn, 1, RING * 18) end
    if keep_d == 0 then nd = string.sub(nd, 1, RING * 14) end
    keep_n = math.min(ns, keep_n)
    f[2 * j - 1] = uid
    f[2 * j] = struct.pack('<dddH', u.tokens, u.stamp, u.last or -1, #nn + keep_n) .. nn
               .. string.sub(st, 27, 26 + keep_n) .. nd
               .. string.sub(st, 27 + ns, 26 + ns + keep_d)
  end
  for from = 1, #f, 1000 do
    redis.call('HSET', KEYS[5], unpack(f, from, math.min(#f, from + 999)))
  end
  redis.call('PEXPIRE', KEYS[5], 2 * keep_ms)
  redis.call('PEXPIRE', KEYS[6], keep_ms)
  if #sdirty > 0 then
    local sf = {}
    for j, uid in ipairs(sdirty) do
      sf[2 * j - 1] = uid
      sf[2 * j] = struct.pack('<dd', sbuckets[uid].tokens, sbuckets[uid].stamp)
    end
    for from = 1, #sf, 1000 do
      redis.call('HSET', KEYS[8], unpack(sf, from, math.min(#sf, from + 999)))
    end
    -- an untouched bucket is full again after burst / rate: its state may go then
    redis.call('PEXPIRE', KEYS[8], math.ceil(sburst / srate * 1000) + 1000)
  end
end
return out
""".replace("@NONCE_RING@", str(NONCE_RING)).replace("@ENTRY_MAX@", str(ENTRY_MAX))

# Append one comment to a room's stream outside the door (an approved held comment, a
# message the platform publishes): a Lua function that scripts start with. It mints the
# next comment id as INGEST does (after the door hash's last id, on Redis TIME, so the
# stream stays ordered whoever writes it), trims the stream as INGEST does, and counts
# the comment in the door hash. stream, door: key names; payload: the comment's JSON;
# maxlen: MAXLEN in comments. Returns the id.
APPEND_ONE = r"""
local function append_one(stream, door, payload, maxlen)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local d = redis.call('HMGET', door, 'id', 'avg', 'n')
  local last_id, stored = d[1], tonumber(d[3] or '0') or 0
  if not last_id then  -- a stream from before the door hash: ask the stream
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    if top then
      local _, lines = string.gsub(top[2][2], '\n', '')
      local ms, sq = string.match(top[1], '^(%d+)-(%d+)$')
      last_id = ms .. '-' .. (tonumber(sq) + lines)
      stored = redis.call('XLEN', stream)
    end
  end
  local id_ms, seq = now_ms, 0
  if last_id then
    local a, b = string.match(last_id, '^(%d+)-(%d+)$')
    if now_ms <= tonumber(a) then id_ms, seq = tonumber(a), tonumber(b) + 1 end
  end
  local id = id_ms .. '-' .. seq
  local avg = tonumber(d[2] or '1') or 1
  redis.call('XADD', stream, 'MAXLEN', '~', math.ceil(tonumber(maxlen) / math.max(1, avg)),
             id, 'd', payload)
  redis.call('HSET', door, 'id', id, 'n', stored + 1)
  return id
end
"""

# Take a room's lease if free, returning the room's committed position.
# KEYS[1] = lease, KEYS[2] = meta; ARGV[1] = token, ARGV[2] = lease ms
# Returns {seq, cursor} or false when another worker holds it.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local m = redis.call('HMGET', KEYS[2], 'seq', 'cursor')
  return {m[1] or '0', m[2] or '0-0'}
end
return false
"""

# Extend a lease we still hold. KEYS[1] = lease; ARGV[1] = token, ARGV[2] = ms. 1 or 0.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Give a lease back if it is still ours. KEYS[1] = lease; ARGV[1] = token. 1 or 0.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Commit one frame: the fencing step of exactly-once. Only the lease holder may write,
# and only the next seq: the frame append and the cursor advance happen together or
# not at all, so a takeover neither loses nor repeats comments.
# The same step records, for replay, every comment the frame accounts for (shown or not)
# when a broadcast is on air: recorded exactly once, like the frame.
# KEYS[1] = lease, KEYS[2] = meta, KEYS[3] = frame stream, KEYS[4] = retract list,
# KEYS[5] = the live broadcast hash, KEYS[6] = its recording stream
# ARGV[1] = token, ARGV[2] = seq, ARGV[3] = cursor, ARGV[4] = frame, ARGV[5] = MAXLEN,
# ARGV[6] = how many retract ids (from the list's head) the frame carries,
# ARGV[7] = the broadcast id the worker saw on air ("" = none), then pairs of
# (comment id, recorded JSON)
# Returns 1 (committed), -1 (lease lost), -2 (seq moved: someone else committed).
COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if cur + 1 ~= tonumber(ARGV[2]) then return -2 end
-- Frame 1 starts a numbering: frames left from an earlier era (the meta hash was lost,
-- and with it the epoch; store/presence.py) must not mix with it. (A key of another type
-- is a fault, left for the XADD to refuse: the room fails alone.)
-- Its meta hash (until now at most an epoch, expiring: store/presence.py) is kept for good.
if cur == 0 then
  if redis.call('TYPE', KEYS[3])['ok'] == 'stream' then redis.call('DEL', KEYS[3]) end
  redis.call('PERSIST', KEYS[2])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], ARGV[2] .. '-0', 'd', ARGV[4])
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'cursor', ARGV[3])
if tonumber(ARGV[6]) > 0 then redis.call('LTRIM', KEYS[4], ARGV[6], -1) end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[5], 'id') == ARGV[7] then
  for i = 8, #ARGV - 1, 2 do
    -- pcall: an id not above the stream's last (never expected) must not undo the frame
    redis.pcall('XADD', KEYS[6], ARGV[i], 'd', ARGV[i + 1])
  end
end
return 1
"""
