-- wrk script: POST /hashes with raw 32-byte hashes (application/octet-stream).
-- Environment: KEY (an API key with the submit scope), HASHES (hashes per request, default 1).
-- Single hashes are fresh for every request; larger bodies cycle through 16 random bodies whose
-- first hash is fresh, so the client stays cheap (the service accepts a hash twice).
local n = tonumber(os.getenv("HASHES") or "1")
local key = os.getenv("KEY") or error("set KEY to an API key with the submit scope")
wrk.method = "POST"
wrk.path = "/hashes"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/octet-stream"

local random, char, concat = math.random, string.char, table.concat

local function bytes(count)
  local t = {}
  for i = 1, count do t[i] = char(random(0, 255)) end
  return concat(t)
end

local pool = {}

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  if n > 1 then
    for i = 1, 16 do pool[i] = bytes(32 * (n - 1)) end
  end
end

local k = 0
request = function()
  if n == 1 then
    return wrk.format(nil, nil, nil, bytes(32))
  end
  k = k % 16 + 1
  return wrk.format(nil, nil, nil, bytes(32) .. pool[k])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d errors=%d p50_ms=%.3f p99_ms=%.3f seconds=%.3f\n",
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
