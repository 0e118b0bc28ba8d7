-- wrk script for the sidecar-injector benchmark (bench/run.py drives it).
--
--   WRK_BODY_FILE=/path/review.json wrk -t1 -c16 -d10s --latency -s bench/post.lua https://127.0.0.1:PORT/mutate
--
-- Every request is the same POST of the file's bytes as application/json on a keep-alive
-- connection; with WRK_VARY=TOKEN (a string in the body), each request replaces TOKEN with
-- a counter of the same length, so that no two requests carry the same pod. done() prints ONE machine-readable line, prefixed "BENCH_RESULT ", with a JSON
-- object: requests, duration_s, requests_per_s, latency in ms (p50/p90/p99/max/mean/stdev),
-- bytes read and the error counts (socket connect/read/write/timeout, non-2xx responses).

local path = os.getenv("WRK_BODY_FILE")
if path == nil or path == "" then
  error("post.lua: set WRK_BODY_FILE to the request body file")
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

local vary = os.getenv("WRK_VARY")
if vary ~= nil and vary ~= "" then
  local first, last = body:find(vary, 1, true)
  if first == nil then
    error("post.lua: WRK_VARY is not in the request body")
  end
  local head, tail = body:sub(1, first - 1), body:sub(last + 1)
  local width = #vary
  local counter = 0
  function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, head .. string.format("%0" .. width .. "d", counter % 10 ^ width) .. tail)
  end
end

-- Per-thread counters live in each thread's Lua state; done() (main state) sums them.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  responses = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

local function num(x)
  -- JSON number; wrk hands out doubles, integers print without an exponent.
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format("%d", x) end
  return string.format("%.6f", x)
end

function done(summary, latency, requests)
  local n2xx, nresp = 0, 0
  for _, t in ipairs(threads) do
    n2xx = n2xx + (t:get("non2xx") or 0)
    nresp = nresp + (t:get("responses") or 0)
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  local fields = {
    '"requests":' .. num(summary.requests),
    '"responses":' .. num(nresp),
    '"duration_s":' .. num(secs),
    '"requests_per_s":' .. num(secs > 0 and summary.requests / secs or 0),
    '"bytes_read":' .. num(summary.bytes),
    '"body_bytes":' .. num(#body),
    '"latency_ms":{' ..
      '"p50":' .. num(latency:percentile(50) / 1000) ..
      ',"p90":' .. num(latency:percentile(90) / 1000) ..
      ',"p99":' .. num(latency:percentile(99) / 1000) ..
      ',"max":' .. num(latency.max / 1000) ..
      ',"mean":' .. num(latency.mean / 1000) ..
      ',"stdev":' .. num(latency.stdev / 1000) .. '}',
    '"errors":{' ..
      '"connect":' .. num(e.connect) ..
      ',"read":' .. num(e.read) ..
      ',"write":' .. num(e.write) ..
      ',"timeout":' .. num(e.timeout) ..
      ',"status_ge_400":' .. num(e.status) ..
      ',"non2xx":' .. num(n2xx) .. '}',
  }
  io.write("BENCH_RESULT {" .. table.concat(fields, ",") .. "}\n")
end
