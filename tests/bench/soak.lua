-- wrk script for tests/bench/soak.sh: every request POSTs the file $SOAK_BODY
-- (Content-Type $SOAK_CONTENT_TYPE, default image/jpeg) to the URL's path,
-- waiting $SOAK_DELAY_MS (default 0) between requests on a connection. At
-- the end one JSON line goes to stdout: wrk's counts and latency percentiles
-- (microseconds) and how many answers had each HTTP status.

local path = os.getenv("SOAK_BODY")
if not path then
  io.stderr:write("soak.lua: set SOAK_BODY to a file\n")
  os.exit(2)
end
local f = assert(io.open(path, "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("SOAK_CONTENT_TYPE") or "image/jpeg"

local pause = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end

-- Each wrk thread has its own Lua state: done() reads their counts here.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do
      total[s] = (total[s] or 0) + n
    end
  end
  local parts = {}
  for s, n in pairs(total) do
    table.insert(parts, string.format('"%d":%d', s, n))
  end
  local e = summary.errors
  io.write(string.format(
    'SOAKJSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d,"status":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
