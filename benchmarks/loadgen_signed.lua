-- wrk script for the shared bench kit's loadgen.run_wrk (/work/shared/bench/loadgen.py), which
-- runs `wrk ... -s LUA URL -- BODY_FILE CONTENT_TYPE`. Its own loadgen_post.lua can only set
-- Content-Type; platform_bench.py points loadgen.LUA at this file instead and passes, in the
-- CONTENT_TYPE slot, "@" followed by the path of a headers file:
--   one "Name: value" per line (e.g. a request signed once with botocore's SigV4Auth: the server
--   verifies every request's signature and does not reject a replay within its 15 minutes),
--   and optionally a line "@method GET" (default POST).
-- Without the "@", args[2] is a plain content type, exactly like loadgen_post.lua.
-- Prints the same WRKJSON summary line as loadgen_post.lua, so run_wrk parses it unchanged.
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*all")
  f:close()
  wrk.method = "POST"
  local spec = args[2] or "text/csv"
  if spec:sub(1, 1) == "@" then
    for line in io.lines(spec:sub(2)) do
      local method = line:match("^@method%s+(%u+)%s*$")
      if method then
        wrk.method = method
      else
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then wrk.headers[name] = value end
      end
    end
    if wrk.method == "GET" and #wrk.body == 0 then wrk.body = nil end
  else
    wrk.headers["Content-Type"] = spec
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
