"""Lua scripts. Each touches only keys of one room (one hash slot), so all are
Cluster-safe; each is atomic, which is what makes the guarantees below hold.
"""

from __future__ import annotations

# Admit and append a batch of one room's comments: the door of the room, in one atomic
# step per batch (no per-comment round trip). Per comment, in order:
#   1. resend: the (user, nonce) was stored before -> "=" .. its id, nothing appended;
#   2. unless staff: banned or timed out -> "!banned:ms" (0 = permanent); room muted and
#      not highlighted -> "!muted:0";
#      duplicate text from the same user within the window -> "!duplicate:ms";
#      slow mode on (room setting) -> one comment per slow_mode_s -> "!slow_mode:ms";
#      otherwise the user's token bucket (rate/s, burst) -> "!rate_limited:ms";
#      (the bucket is ratelimit.take_tokens, step for step; time comes from Redis TIME so
#      gateway clocks do not matter, and the state is shared by every gateway);
#   3. XADD, remember the nonce, charge the limits -> the new stream id.
# KEYS[1] = comment stream, KEYS[2] = room settings hash, KEYS[3] = bans hash,
#   KEYS[4] = highlighted uids (granted by moderators: may speak in a muted room),
#   then per comment i: nonce key, limit hash (tokens, stamp, last), duplicate key
# ARGV[1] = MAXLEN (~), ARGV[2] = nonce TTL s, ARGV[3] = rate/s, ARGV[4] = burst,
#   ARGV[5] = duplicate window s, then per comment i: payload, flags ("s" = staff,
#   "h" = highlighted, "-" = ordinary)
INGEST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local slow = tonumber(redis.call('HGET', KEYS[2], 'slow_mode_s') or '0') or 0
local muted = (tonumber(redis.call('HGET', KEYS[2], 'mute') or '0') or 0) > 0
local rate, burst, dupwin = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep_ms = math.ceil(math.max(burst / math.max(rate, 1e-6), slow, dupwin) * 1000) + 1000
local out = {}
for i = 0, (#KEYS - 4) / 3 - 1 do
  local nk, lk, dk = KEYS[5 + 3 * i], KEYS[6 + 3 * i], KEYS[7 + 3 * i]
  local payload, flags = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
  local seen = redis.call('GET', nk)
  if seen then
    out[#out + 1] = '=' .. seen
  else
    local verdict = nil
    local tokens, stamp = burst, now
    if flags ~= 's' then
      local st = redis.call('HMGET', lk, 'tokens', 'stamp', 'last')
      tokens, stamp = tonumber(st[1]) or burst, tonumber(st[2]) or now
      local last = tonumber(st[3])
      local uid = string.match(lk, ':rl:(.*)$')
      local until_s = tonumber(redis.call('HGET', KEYS[3], uid) or '-1') or -1
      if until_s == 0 then
        verdict = '!banned:0'
      elseif until_s > now then
        verdict = '!banned:' .. math.ceil((until_s - now) * 1000)
      elseif muted and flags ~= 'h' and redis.call('SISMEMBER', KEYS[4], uid) == 0 then
        verdict = '!muted:0'
      elseif dupwin > 0 and redis.call('EXISTS', dk) == 1 then
        verdict = '!duplicate:' .. math.max(1, redis.call('PTTL', dk))
      elseif slow > 0 then
        if last and last + slow > now then
          verdict = '!slow_mode:' .. math.ceil((last + slow - now) * 1000)
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
      out[#out + 1] = verdict
    else
      local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', payload)
      redis.call('SET', nk, id, 'EX', ARGV[2])
      if flags ~= 's' then
        redis.call('HSET', lk, 'tokens', tostring(tokens), 'stamp', tostring(stamp),
                   'last', tostring(now))
        redis.call('PEXPIRE', lk, keep_ms)
        if dupwin > 0 then redis.call('SET', dk, '1', 'PX', math.ceil(dupwin * 1000)) end
      end
      out[#out + 1] = id
    end
  end
end
return out
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
