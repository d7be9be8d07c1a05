"""Lua scripts. Each touches only keys of one room (one hash slot), so all are
Cluster-safe; each is atomic, which is what makes the guarantees below hold.
"""

from __future__ import annotations

# Append a batch of one room's comments, idempotent per (user, nonce).
# KEYS[1] = comment stream, KEYS[1+i] = nonce key of comment i
# ARGV[1] = stream MAXLEN (~), ARGV[2] = nonce TTL (s), ARGV[2+i] = payload of comment i
# Returns one entry per comment: its stream id, or "=" .. id when the nonce was seen before
# (the resend gets the same id and nothing is appended).
INGEST = """
local out = {}
for i = 2, #KEYS do
  local seen = redis.call('GET', KEYS[i])
  if seen then
    out[#out + 1] = '=' .. seen
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i + 1])
    redis.call('SET', KEYS[i], id, 'EX', ARGV[2])
    out[#out + 1] = id
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
# KEYS[1] = lease, KEYS[2] = meta, KEYS[3] = frame stream
# ARGV[1] = token, ARGV[2] = seq, ARGV[3] = cursor, ARGV[4] = frame, ARGV[5] = MAXLEN
# Returns 1 (committed), -1 (lease lost), -2 (seq moved: someone else committed).
COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if cur + 1 ~= tonumber(ARGV[2]) then return -2 end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], ARGV[2] .. '-0', 'd', ARGV[4])
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'cursor', ARGV[3])
return 1
"""
