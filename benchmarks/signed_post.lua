-- wrk script: POST a body with headers read from a file (one "Name: value" per line), e.g. a request
-- signed once with SigV4 (the server verifies the signature of every request; it does not reject
-- a replay within the signature's 15 minutes). Prints a JSON summary line.
-- usage: wrk -t1 -cC -dDs --timeout 30s -s signed_post.lua URL -- BODY_FILE HEADERS_FILE
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*all")
  f:close()
  wrk.method = "POST"
  for line in io.lines(args[2]) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
