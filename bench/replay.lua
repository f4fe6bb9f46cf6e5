-- wrk script: replays the requests listed in FILE, one per line, rotating through them,
-- and counts the answers by HTTP status. bench/bench.py writes the file; each line is
--
--   METHOD <tab> PATH <tab> BODY <tab> Header: value <tab> Header: value ...
--
-- (BODY may be empty; no field holds a tab). That is how the production-load scenarios
-- send each request from its own client address (X-Forwarded-For) and account.
--
--   wrk -s bench/replay.lua http://127.0.0.1:PORT -- requests.tsv
--
-- Requests are built once per thread in init(); request() only hands out the next one.
-- Each thread starts at a different offset so threads do not walk the list in lockstep.
-- done() prints one line, "statuses: 200=N 429=M ...", summed over the threads: wrk
-- itself only counts "non-2xx or 3xx", and these scenarios must tell a wrong code (400)
-- from a refusal by the rate limiter (429).

local threads, next_tid = {}, 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local reqs, n, i = {}, 0, 0
statuses = {}

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(fields, field)
  end
  return fields
end

function init(args)
  local file = args[1]
  if not file then
    error("usage: wrk -s replay.lua URL -- REQUESTS_FILE")
  end
  for line in io.lines(file) do
    if line ~= "" then
      local f = split(line)
      local headers = {}
      for h = 4, #f do
        local name, value = f[h]:match("^([^:]+):%s*(.*)$")
        if name then
          headers[name] = value
        end
      end
      local body = nil
      if f[3] ~= "" then
        body = f[3]
        headers["Content-Type"] = headers["Content-Type"] or "application/json"
      end
      n = n + 1
      reqs[n] = wrk.format(f[1], f[2], headers, body)
    end
  end
  if n == 0 then
    error("no requests in " .. file)
  end
  i = ((tid or 0) * 7919) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      total[status] = (total[status] or 0) + count
    end
  end
  local keys = {}
  for status in pairs(total) do
    table.insert(keys, status)
  end
  table.sort(keys)
  local parts = {}
  for _, status in ipairs(keys) do
    table.insert(parts, status .. "=" .. total[status])
  end
  io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
