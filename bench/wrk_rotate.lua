-- wrk script for the Shoal benchmark: POSTs pre-built JSON bodies in rotation.
-- Args (after `--`): <bodies file, one JSON body per line> <request path> [max requests]
-- Requests are formatted once in init() so the per-request cost stays wrk's own.
-- With a max, each thread stops after that many responses (run with -t1 so it is global).

local reqs = {}
local idx = 0
local max_requests = 0
local responses = 0

function init(args)
  local file, path = args[1], args[2]
  max_requests = tonumber(args[3] or "0") or 0
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("POST", path, headers, line)
    end
  end
  if #reqs == 0 then
    error("no request bodies in " .. file)
  end
  if max_requests > 0 then
    -- Defined only when a count bound is asked for: wrk parses bodies only for scripts
    -- that have a response() function.
    response = function(status, headers, body)
      responses = responses + 1
      if responses >= max_requests then
        wrk.thread:stop()
      end
    end
  end
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
