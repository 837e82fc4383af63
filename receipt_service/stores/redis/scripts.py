"""The Lua scripts of the shared store: each multi-key write of a lane, applied, replicated and appended to
the AOF as a whole."""

_ADD_BATCH = """
local floor = redis.call('HGET', KEYS[1], 'floor')
if floor and ARGV[3] < floor then return redis.error_reply('FLOOR ' .. floor) end
local prev = redis.call('ZREVRANGEBYLEX', KEYS[4], '(' .. ARGV[8], '[' .. ARGV[1], 'LIMIT', 0, 1)[1]
if prev and string.sub(prev, 22, 37) >= ARGV[3] then
  return redis.error_reply('TICKS ' .. (redis.call('HGET', KEYS[5], ARGV[1]) or string.sub(prev, 22, 37)))
end
local n = tonumber(ARGV[5])
local first = redis.call('HINCRBY', KEYS[1], 'next_seq', n) - n + 1
local logf = 0
if ARGV[7] ~= '' then
  logf = redis.call('HINCRBY', KEYS[6], ARGV[7], n) - n
  for i = 9, #ARGV, 250 do  -- the subject's index: record hash -> its newest seq (retention reads it)
    local kv = {}
    for j = i, math.min(i + 249, #ARGV) do
      kv[#kv + 1] = ARGV[j]
      kv[#kv + 1] = string.format('%d', first + j - 9)
    end
    redis.call('HSET', KEYS[7], unpack(kv))
  end
  redis.call('ZADD', KEYS[8], logf, first)
end
local f = string.format('%d', first)
redis.call('HSET', KEYS[2], f, f .. ',' .. string.format('%d', logf) .. ',' .. ARGV[6])
redis.call('ZADD', KEYS[3], first, f .. ':' .. ARGV[5] .. ':' .. ARGV[2])
redis.call('ZADD', KEYS[4], 0, ARGV[2] .. ':' .. f)
local top = redis.call('HGET', KEYS[5], ARGV[1])
if not top or top < ARGV[4] then redis.call('HSET', KEYS[5], ARGV[1], ARGV[4]) end
return {first, logf}
"""

_SEAL = """
local top = ARGV[1]
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do if v > top then top = v end end
local floor = redis.call('HGET', KEYS[1], 'floor')
if floor and floor > top then top = floor end
if top > ARGV[1] then return {'HIGHER', top} end
redis.call('HSET', KEYS[1], 'floor', ARGV[1])
return {'SEALED', redis.call('HGET', KEYS[1], 'next_seq')}
"""

_COMMIT_WINDOW = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('LEASE this instance no longer leads the lane; another instance took over')
end
local mark = redis.call('HGET', KEYS[1], 'watermark')
if tonumber(mark) + 1 ~= tonumber(ARGV[2]) then return redis.error_reply('WATERMARK ' .. mark) end
local nt, ng = tonumber(ARGV[4]), tonumber(ARGV[5])
local tp = 8 + 3 * nt
for i = 0, nt - 1 do
  local key, first, doc = ARGV[8 + 3 * i], ARGV[9 + 3 * i], ARGV[10 + 3 * i]
  redis.call('HSET', KEYS[3], key, doc)
  redis.call('ZADD', KEYS[4], first, key)
  for j = 0, ng - 1 do
    redis.call('HSET', KEYS[7 + i], ARGV[tp + j], ARGV[6])
    redis.call('ZADD', KEYS[5], first, key .. '/' .. ARGV[tp + j])
  end
end
local hp = tp + ng
for h = 0, (#ARGV - hp + 1) / 2 - 1 do
  redis.call('HSET', KEYS[6], ARGV[hp + 2 * h], ARGV[hp + 2 * h + 1])
  redis.call('ZADD', KEYS[7 + nt + h], ARGV[3], ARGV[3] .. ':' .. ARGV[hp + 2 * h + 1])
end
redis.call('HSET', KEYS[1], 'watermark', ARGV[3])
redis.call('PUBLISH', ARGV[7], 'c ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
"""

_RECORD_ANCHOR = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local job = cjson.decode(doc)
job['attempts'] = job['attempts'] + 1
if ARGV[2] == '' then
  if job['anchor'] == cjson.null then job['last_error'] = ARGV[3] end
elseif job['anchor'] == cjson.null then
  job['anchor'] = ARGV[2]
  job['done_ns'] = ARGV[3]
  job['last_error'] = cjson.null
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(job))
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('PUBLISH', ARGV[5], 'a ' .. ARGV[6] .. ' ' .. ARGV[7])
end
return 1
"""

_LEAD = """
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif cur then
  cur = false
else
  cur = ARGV[1] .. ':' .. string.format('%d', redis.call('HINCRBY', KEYS[2], 'fence', 1))
  redis.call('SET', KEYS[1], cur, 'PX', ARGV[2])
end
local clock = redis.call('GET', KEYS[3])
local ours = 0
if clock == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  ours = 1
elseif not clock then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
  ours = 1
end
return {cur, ours}
"""

_RESIGN = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

_ADD_EVENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], 'events', 1)
redis.call('HSET', KEYS[1], ARGV[1], n)
redis.call('HSET', KEYS[2], n, ARGV[2])
redis.call('RPUSH', KEYS[4], n)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[5], ARGV[3], n) end
return n
"""

_ADD_KEY = """
if ARGV[1] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if cur and cjson.decode(cur)['tenant'] ~= ARGV[2] then
    return redis.error_reply('CONFLICT subject ' .. ARGV[1] .. ' is registered by another app; choose another pseudonym')
  end
end
local k = redis.call('HGET', KEYS[2], ARGV[4])
if k and cjson.decode(k)['party'] ~= ARGV[5] then
  return redis.error_reply('CONFLICT key ' .. ARGV[4] .. ' is already registered for another party')
end
if ARGV[1] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[6])
return 1
"""

_REVOKE = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local k = cjson.decode(doc)
if k['revoked'] ~= cjson.null then return 0 end
k['revoked'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(k))
return 1
"""

_PURGE = """
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return redis.error_reply('LEASE this instance no longer leads') end
if redis.call('HGET', KEYS[1], 'purged_upto') ~= ARGV[2] then return redis.error_reply('PURGE raced') end
local nt = tonumber(ARGV[4])
for i = 0, nt - 1 do
  redis.call('HDEL', KEYS[2], ARGV[5 + i])
  redis.call('ZREM', KEYS[3], ARGV[5 + i])
  redis.call('DEL', KEYS[8 + i])
end
local a = 5 + nt
for i = 1, tonumber(ARGV[a]) do
  redis.call('HDEL', KEYS[4], ARGV[a + 1])
  redis.call('ZREM', KEYS[5], ARGV[a + 2])
  redis.call('ZREM', KEYS[6], ARGV[a + 3])
  a = a + 3
end
a = a + 1
local upto = tonumber(ARGV[3])
local k = 8 + nt
while a <= #ARGV do  -- per subject: its record hashes in the purged range, then its fully purged batches
  for i = a + 1, a + tonumber(ARGV[a]) do
    local seq = redis.call('HGET', KEYS[k], ARGV[i])
    if seq and tonumber(seq) <= upto then redis.call('HDEL', KEYS[k], ARGV[i]) end
  end
  a = a + tonumber(ARGV[a]) + 1
  for i = a + 1, a + tonumber(ARGV[a]) do redis.call('ZREM', KEYS[k + 1], ARGV[i]) end
  a = a + tonumber(ARGV[a]) + 1
  k = k + 2
end
redis.call('HSET', KEYS[1], 'purged_upto', ARGV[3])
return 1
"""

_INDEX_SUBJECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  local seq = redis.call('HGET', KEYS[2], ARGV[i])
  if not seq or tonumber(seq) < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
redis.call('DEL', KEYS[1])
return 1
"""


SCRIPTS = {
    "add_batch": _ADD_BATCH,
    "commit_window": _COMMIT_WINDOW,
    "seal": _SEAL,
    "record_anchor": _RECORD_ANCHOR,
    "lead": _LEAD,
    "resign": _RESIGN,
    "add_event": _ADD_EVENT,
    "add_key": _ADD_KEY,
    "revoke": _REVOKE,
    "purge": _PURGE,
    "index_subject": _INDEX_SUBJECT,
}
