"""Lua scripts. Each touches only keys of one room (one hash slot), so all are
Cluster-safe; each is atomic, which is what makes the guarantees below hold.
"""

from __future__ import annotations

# Admit and append a batch of one room's comments: the door of the room, in one atomic
# step per batch (no per-comment round trip). Per comment, in order:
#   1. resend: the (user, nonce) was stored within the nonce TTL (among at least the
#      user's last NONCE_RING comments in the room) -> "=" .. its id, nothing appended;
#   2. unless staff: banned or timed out -> "!banned:ms" (0 = permanent); room muted and
#      not highlighted -> "!muted:0";
#      duplicate text from the same user within the window -> "!duplicate:ms";
#      slow mode on (room setting) -> one comment per slow_mode_s -> "!slow_mode:ms";
#      otherwise the user's token bucket (rate/s, burst) -> "!rate_limited:ms";
#      (the bucket is ratelimit.take_tokens, step for step; time comes from Redis TIME so
#      gateway clocks do not matter, and the state is shared by every gateway);
#   3. XADD, remember the nonce, charge the limits -> the new stream id.
# Redis cost is what bounds a shard's comments/s, so all of a user's state in a room is
# one hash (read once and written once per batch, whatever the user sent in it): the
# bucket (t, s), the last accepted time (l), recent nonces (n: "\n" nonce "\t" id ...,
# newest first; nonces are printable ASCII, ids carry their time) and recent text hashes
# (d: "\n" hash "\t" expiry_ms ...). Bans are read with one HMGET for the whole batch.
# About 4 redis.calls per comment (HMGET user, XADD, HSET + PEXPIRE user) instead of 9;
# the lists are only trimmed (to NONCE_RING live entries) once past TRIM_AT bytes, and
# expired entries are ignored when read, so the common path is a find and a prepend.
# KEYS[1] = comment stream, KEYS[2] = room settings hash, KEYS[3] = bans hash,
#   KEYS[4] = highlighted uids (granted by moderators: may speak in a muted room),
#   then per comment i: the user's hash in the room (keys.user)
# ARGV[1] = MAXLEN (~), ARGV[2] = nonce TTL s, ARGV[3] = rate/s, ARGV[4] = burst,
#   ARGV[5] = duplicate window s, then per comment i: payload, flags ("s" = staff,
#   "h" = highlighted, "-" = ordinary), nonce, normalised-text hash
NONCE_RING = 32  # at least a connection's unacked comments (32): what a client resends
INGEST = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local now_ms = math.floor(now * 1000)
local slow = tonumber(redis.call('HGET', KEYS[2], 'slow_mode_s') or '0') or 0
local muted = (tonumber(redis.call('HGET', KEYS[2], 'mute') or '0') or 0) > 0
local nonce_ttl_ms = tonumber(ARGV[2]) * 1000
local rate, burst, dupwin = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep_ms = math.ceil(math.max(burst / math.max(rate, 1e-6), slow, dupwin,
                                   tonumber(ARGV[2])) * 1000) + 1000
local ring = @NONCE_RING@
local TRIM_AT = 2048  -- bytes: lists are trimmed (to `ring` live entries) only past this
local n = #KEYS - 4
local uids = {}
for i = 1, n do uids[i] = string.match(KEYS[4 + i], ':u:(.*)$') end
local banned = {}
for first = 1, n, 500 do  -- HMGET in chunks: unpack() has a stack limit
  local last = math.min(n, first + 499)
  local got = redis.call('HMGET', KEYS[3], unpack(uids, first, last))
  for j = first, last do banned[j] = got[j - first + 1] end
end

-- "\n" a "\t" b entries, newest first: keep the first `limit` whose b passes keep(b).
local function trim(list, limit, keep)
  local out, count = {}, 0
  for a, b in string.gmatch(list, '\n([^\t\n]*)\t([^\n]*)') do
    if count >= limit then break end
    if keep(b) then
      count = count + 1
      out[count] = '\n' .. a .. '\t' .. b
    end
  end
  return table.concat(out)
end
local function fresh_id(id)
  return now_ms - (tonumber(string.match(id, '^(%d+)')) or 0) < nonce_ttl_ms
end
local function unexpired(expiry) return (tonumber(expiry) or 0) > now_ms end

local users, order, out = {}, {}, {}
for i = 1, n do
  local uk = KEYS[4 + i]
  local a = 6 + 4 * (i - 1)
  local payload, flags, nonce, th = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local u = users[uk]
  if not u then
    local st = redis.call('HMGET', uk, 't', 's', 'l', 'n', 'd')
    u = {tokens = tonumber(st[1]) or burst, stamp = tonumber(st[2]) or now,
         last = tonumber(st[3]), nonces = st[4] or '', dups = st[5] or '', dirty = false}
    users[uk] = u
    order[#order + 1] = uk
  end
  local seen = nil
  local at = string.find(u.nonces, '\n' .. nonce .. '\t', 1, true)
  if at then
    seen = string.match(u.nonces, '^[^\t]*\t([^\n]*)', at)
    if seen and not fresh_id(seen) then seen = nil end
  end
  if seen then
    out[i] = '=' .. seen
  else
    local verdict = nil
    local tokens, stamp = u.tokens, u.stamp
    if flags ~= 's' then
      local until_s = tonumber(banned[i] or '-1') or -1
      local dup_at = dupwin > 0 and string.find(u.dups, '\n' .. th .. '\t', 1, true)
      local dup_left = 0
      if dup_at then
        dup_left = (tonumber(string.match(u.dups, '^[^\t]*\t([^\n]*)', dup_at)) or 0) - now_ms
      end
      if until_s == 0 then
        verdict = '!banned:0'
      elseif until_s > now then
        verdict = '!banned:' .. math.ceil((until_s - now) * 1000)
      elseif muted and flags ~= 'h' and redis.call('SISMEMBER', KEYS[4], uids[i]) == 0 then
        verdict = '!muted:0'
      elseif dup_left > 0 then
        verdict = '!duplicate:' .. math.max(1, math.ceil(dup_left))
      elseif slow > 0 then
        if u.last and u.last + slow > now then
          verdict = '!slow_mode:' .. math.ceil((u.last + slow - now) * 1000)
        end
      else
        if now > stamp then
          tokens = math.min(burst, tokens + (now - stamp) * rate)
          stamp = now
        end
        if tokens + 1e-9 >= 1 then
          tokens = math.max(0, tokens - 1)
        elseif rate <= 0 or burst < 1 then
          verdict = '!rate_limited:3600000'
        else
          verdict = '!rate_limited:' .. math.ceil((1 - tokens) / rate * 1000)
        end
      end
    end
    if verdict then
      out[i] = verdict
    else
      local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', payload)
      u.nonces = '\n' .. nonce .. '\t' .. id .. u.nonces
      if #u.nonces > TRIM_AT then u.nonces = trim(u.nonces, ring, fresh_id) end
      if flags ~= 's' then
        u.tokens, u.stamp, u.last = tokens, stamp, now
        if dupwin > 0 then
          u.dups = '\n' .. th .. '\t' .. (now_ms + math.ceil(dupwin * 1000)) .. u.dups
          if #u.dups > TRIM_AT then u.dups = trim(u.dups, ring, unexpired) end
        end
      end
      u.dirty = true
      out[i] = id
    end
  end
end
for _, uk in ipairs(order) do
  local u = users[uk]
  if u.dirty then
    local fields = {'n', u.nonces, 'd', u.dups}
    if u.last then
      fields[#fields + 1] = 't'
      fields[#fields + 1] = tostring(u.tokens)
      fields[#fields + 1] = 's'
      fields[#fields + 1] = tostring(u.stamp)
      fields[#fields + 1] = 'l'
      fields[#fields + 1] = tostring(u.last)
    end
    redis.call('HSET', uk, unpack(fields))
    redis.call('PEXPIRE', uk, keep_ms)
  end
end
return out
""".replace("@NONCE_RING@", str(NONCE_RING))

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
