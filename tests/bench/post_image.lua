-- wrk script for tests/bench/serve-peers.sh and v2-bench.sh: every request POSTs the same
-- image file (path in $WRK_IMAGE, Content-Type in $WRK_CONTENT_TYPE, default
-- image/jpeg); at the end one JSON line with the counts and latency
-- percentiles goes to stdout, after wrk's own report.

local path = os.getenv("WRK_IMAGE")
if not path then
  io.stderr:write("post_image.lua: set WRK_IMAGE to an image file\n")
  os.exit(2)
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "image/jpeg"
-- A KServe v2 body (tests/bench/v2-bench.sh): the JSON header's length.
local hl = os.getenv("WRK_INFER_HEADER_LEN")
if hl then
  wrk.headers["Inference-Header-Content-Length"] = hl
end

function done(summary, latency, requests)
  local e = summary.errors
  -- Latencies are in microseconds; duration too.
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_max_us":%d,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
