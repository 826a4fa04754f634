-- Replays a file of pre-built requests, each exactly once, spread over wrk's threads.
--
--   wrk -t T -c C -d D --latency -s replay.lua URL -- FILE PATH T EXPECT [ADDRESSES]
--
-- FILE has one request per line: "<cookie value or ->\t<JSON body, or a form>". Thread k sends lines k, k+T, k+2T, ...
-- When a thread has sent all of its lines it stops asking for more (its idle connections send nothing and
-- record no latency), and it stops once every line it sent has been answered. A response counts as "ok"
-- when it is a 200 whose body contains EXPECT; every other answer is counted, by status, as "bad".
-- done() prints one line "BENCHJSON {...}" for bench/loadgen.py. With ADDRESSES > 0 line n carries
-- "X-Forwarded-For: 198.51.100.<n mod ADDRESSES + 1>": the load of that many clients behind a trusted proxy.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local file, path, nthreads = args[1], args[2], tonumber(args[3])
  expect = args[4] or ""
  local addresses = tonumber(args[5] or "0") or 0
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      local tab = string.find(line, "\t", 1, true)
      local cookie, body = string.sub(line, 1, tab - 1), string.sub(line, tab + 1)
      local headers = { ["Content-Type"] = "application/json" }
      if string.sub(body, 1, 1) ~= "{" then
        -- A form (the OpenID Connect token and userinfo endpoints, O1 and O2).
        headers["Content-Type"] = "application/x-www-form-urlencoded"
      end
      if cookie ~= "-" then
        headers["Cookie"] = "twostep_session=" .. cookie
      end
      if addresses > 0 then
        headers["X-Forwarded-For"] = "198.51.100." .. (i % addresses + 1)
      end
      reqs[#reqs + 1] = wrk.format("POST", path, headers, body)
    end
    i = i + 1
  end
  total = #reqs
  sent, ok, bad, answered = 0, 0, 0, 0
  first_at, last_at = 0, 0
  bad_statuses = ""
  -- wrk calls request() once on thread 0 right after init() only to parse it: do not use up a line then.
  verifying = (tid == 0)
end

function request()
  if verifying then
    verifying = false
    return reqs[1] or wrk.format("POST", "/", { ["Content-Type"] = "application/json" }, "{}")
  end
  if sent >= total then
    return ""  -- nothing left: this connection goes quiet (no latency is recorded for it)
  end
  if sent == 0 then
    first_at = now()
  end
  sent = sent + 1
  return reqs[sent]
end

function response(status, headers, body)
  answered = answered + 1
  last_at = now()
  if status == 200 and (expect == "" or string.find(body, expect, 1, true)) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 20 then
      bad_statuses = bad_statuses .. status .. ":" .. string.sub(string.gsub(body or "", "[\"\\\n\r\t]", " "), 1, 80) .. "|"
    end
  end
  if answered >= total then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t_total, t_sent, t_ok, t_bad, samples = 0, 0, 0, 0, ""
  local t_first, t_last = nil, 0
  for _, t in ipairs(threads) do
    local f = t:get("first_at")
    if f > 0 and (t_first == nil or f < t_first) then t_first = f end
    local l = t:get("last_at")
    if l > t_last then t_last = l end
    t_total = t_total + t:get("total")
    t_sent = t_sent + t:get("sent")
    t_ok = t_ok + t:get("ok")
    t_bad = t_bad + t:get("bad")
    samples = samples .. t:get("bad_statuses")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %d, "active_s": %.6f, "requests": %d, "lines": %d, "sent": %d, "ok": %d, "bad": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}, '
      .. '"bad_samples": "%s"}\n',
    summary.duration, (t_first and t_last > t_first) and (t_last - t_first) or 0, summary.requests, t_total, t_sent, t_ok, t_bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    samples))
end
