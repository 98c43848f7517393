-- wrk script for the benchmark (loadtest/bench.py): closed-loop POSTs of JSON bodies, then a JSON summary.
--   WRK_BODIES  file with one JSON request body per line (sent in turn, each connection cycling through them)
--   WRK_RESULT  file the summary is written to (latencies in microseconds, as wrk measures them)
--   WRK_AUTHORIZATION  optional Authorization header value (e.g. "Bearer <key>"), sent with every request
local bodies_path = os.getenv("WRK_BODIES")
local result_path = os.getenv("WRK_RESULT")
local authorization = os.getenv("WRK_AUTHORIZATION")
local prepared = {}
local position = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  if authorization ~= nil and #authorization > 0 then
    headers["Authorization"] = authorization
  end
  for line in io.lines(bodies_path) do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("POST", wrk.path, headers, line)
    end
  end
  if #prepared == 0 then
    error("no request bodies in " .. tostring(bodies_path))
  end
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function done(summary, latency, requests)
  local out = assert(io.open(result_path, "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p95": %d, ' ..
    '"p99": %d, "p99.9": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
  out:close()
end
